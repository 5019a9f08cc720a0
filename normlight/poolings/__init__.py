"""Pooling plugins: how a model reads ONE vector out of its tokens (ViT ``pool``, GPT ``readout``).

base.py     the ``Pooling`` base class and what a pooling declares (norm position, class token, hidden states)
simple.py   cls, mean, max, last_token, weighted_mean (parameter-free)
gem.py      gem (GeM, one learnable p) and ggem (Group GeM, one p per channel group)
attention.py attn (learned-query attention pooling), attn_channelwise (AttSets), multi_layer_attn
factory.py  ``create_pooling``: build a pooling plugin with its context and probe it once
"""

from normlight.poolings.base import NORM_POSITIONS, Pooling
from normlight.poolings.factory import create_pooling, declared

__all__ = ["NORM_POSITIONS", "Pooling", "create_pooling", "declared"]
