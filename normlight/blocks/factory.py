"""``get_placement``: a placement name or class -> the transformer block class it names."""

from __future__ import annotations

from typing import Any

from normlight.blocks.base import Block
from normlight.errors import PluginError
from normlight.registry import resolve


def get_placement(spec: Any) -> type:
    """The block class of a placement given as a name or a class (a subclass of the suite's Block)."""
    cls, label = resolve("placements", spec)
    if not (isinstance(cls, type) and issubclass(cls, Block)):
        raise PluginError(f"{label} is {cls!r}; a placement plugin must be a subclass of normlight.blocks.Block")
    return cls
