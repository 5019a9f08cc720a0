"""Token-mixer plugins: what mixes information across tokens inside a block (``block.attn``).

``attention`` (the default) is ``normlight.blocks.attention.Attention``, built through the placement so its
qk-norms and other attention parts stay; the others replace it:

pool.py     pool (PoolFormer: AvgPool(x) - x over the token grid, ViT only)
identity.py identity (no token mixing: the "identity mapping" mixer ablation)
factory.py  ``create_mixer``: build a mixer plugin with its context, probe it once; ``check_mixer``
"""

from normlight.mixers.factory import check_mixer, create_mixer

__all__ = ["check_mixer", "create_mixer"]
