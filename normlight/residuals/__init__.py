"""Residual plugins: how a block's branch output joins the residual stream (placements still place the norms).

base.py    the ``Residual`` base class and the sites a residual can act on
add.py     add (x + F), scaled (constant, Inception-ResNet), depth_scaled (1/sqrt(L)), gate (learnable scalar)
laurel.py  laurel (LAuReL: learned residual weights and/or a low-rank term)
dwa.py     dwa (DenseFormer: depth-weighted average of all earlier block outputs)
value.py   value_residual (ResFormer: the first layer's attention values mixed into every later layer)
factory.py ``create_residual``: build a residual plugin for one site with its context, probe it once
"""

from normlight.residuals.base import BRANCH_SITES, SITES, Residual
from normlight.residuals.factory import create_residual, declared_sites

__all__ = ["BRANCH_SITES", "SITES", "Residual", "create_residual", "declared_sites"]
