"""Depth-regularizer plugins: randomly skip whole blocks while training (off by default).

A depth regularizer is built once per block (``layer_idx``, ``num_layers``) and called by the model as
``reg(x, h)`` with the block's input ``x`` and output ``h``; it returns what the next block reads.

stochastic.py  stochastic_depth (Huang et al. 2016: per mini-batch, linear decay, test-time scaling),
               drop_path (per sample, inverted scaling, linear rate over depth)
layerskip.py   layerskip (LayerSkip: per-sample layer dropout rising with depth, optional early-exit loss)
factory.py     ``create_depth_regularizer``: build one with its context, probe it once
"""

from normlight.depth.factory import create_depth_regularizer

__all__ = ["create_depth_regularizer"]
