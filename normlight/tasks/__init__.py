"""Lightning tasks: :class:`ImageClassification` (ViT, ResNet, timm) and :class:`CausalLanguageModeling` (GPT).

Both build their network with ``normlight.create_model`` from plain serializable arguments and share the
optimizer/schedule logic of :class:`NormTask` (``normlight.tasks.base``).
"""

from normlight.tasks.base import DataMismatchError, NormTask
from normlight.tasks.classification import ImageClassification
from normlight.tasks.language import CausalLanguageModeling

__all__ = ["CausalLanguageModeling", "DataMismatchError", "ImageClassification", "NormTask"]
