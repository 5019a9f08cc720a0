"""What an analysis returns: plain numbers, so the report, MLflow and ``normlight compare`` need no analysis code.

- ``scalars``: one number per key (logged as the metric ``analysis/<name>/<key>`` at step 0);
- ``series``: values along an axis (per layer, per number of layers removed, per span length), logged as the
  metric ``analysis/<name>/<key>`` with step = position on the axis, so ``normlight compare`` draws them per run
  group like a training curve; a key ``<quantity>/<line>`` puts lines of one quantity into one plot panel;
- ``tables``: rows of dicts (CSV + markdown in the report);
- ``matrices``: 2-D grids (heat maps), e.g. the angular distance for every start layer and span.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field


@dataclass
class Series:
    """``values[i]`` sits at position ``start + i`` on ``axis``."""

    axis: str
    values: list[float]
    start: int = 0


@dataclass
class Matrix:
    """``values[r][c]``: row ``row_start + r`` of ``rows``, column ``col_start + c`` of ``cols`` (NaN = undefined)."""

    values: list[list[float]]
    rows: str
    cols: str
    row_start: int = 0
    col_start: int = 0


@dataclass
class AnalysisResult:
    """The output of one analysis (see the module docstring)."""

    name: str
    scalars: dict[str, float] = field(default_factory=dict)
    series: dict[str, Series] = field(default_factory=dict)
    tables: dict[str, list[dict]] = field(default_factory=dict)
    matrices: dict[str, Matrix] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def metrics(self) -> list[tuple[str, float, int]]:
        """``(metric name, value, step)`` for every scalar and series point (non-finite values included)."""
        out = [(f"analysis/{self.name}/{k}", float(v), 0) for k, v in self.scalars.items()]
        for k, s in self.series.items():
            out += [(f"analysis/{self.name}/{k}", float(v), s.start + i) for i, v in enumerate(s.values)]
        return out

    def step_axes(self) -> dict[str, str]:
        """Metric name -> what its step counts, for every series."""
        return {f"analysis/{self.name}/{k}": s.axis for k, s in self.series.items()}

    def to_dict(self) -> dict:
        """JSON-ready (non-finite floats become None)."""
        return _finite(asdict(self))


def _finite(obj):
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj
