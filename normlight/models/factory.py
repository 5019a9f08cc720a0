"""``create_model``: a preset name (``gpt-tiny``, ``vit-small``, ``resnet20``) or ``timm:<name>`` -> a model."""

from __future__ import annotations

from typing import Any

from normlight.models.timm_adapter import create_timm_model
from normlight.registry import call_with_context, resolve


def create_model(name: str, **kwargs: Any):
    """Build a model by preset name (``gpt-tiny``, ``vit-small``, ``resnet20``) or ``timm:<name>``."""
    if name.lower().startswith("timm:"):
        return create_timm_model(name.split(":", 1)[1], **kwargs)
    factory, label = resolve("models", name)
    return call_with_context(factory, label, (), kwargs, {})
