"""Extra normalization plugins for normlight (BiasNorm, L1 norm, L1 batch norm, parallel block, LSE pooling).

normlight finds these through the entry points in pyproject.toml; importing this package does not
import the modules, so a broken optional dependency of one plugin never hides the others.
"""

__version__ = "0.3.0"
