"""Studies: published claims about normalization as runnable sweeps with a verdict rule fixed in code.

Studies are discovered through the ``normlight.studies`` entry-point group (like norms and placements), so a
plugin distribution can ship a study of its own norm. ``list_studies()`` names them without importing study
code; ``get_study(name)`` loads one.
"""

from __future__ import annotations

from normlight import registry
from normlight.errors import PluginError, UnknownNameError
from normlight.studies.base import (
    OUTCOMES,
    SCALES,
    Analysis,
    Outcome,
    Plot,
    RunRecord,
    Scale,
    Study,
    Table,
    Verdict,
)

__all__ = [
    "OUTCOMES",
    "SCALES",
    "Analysis",
    "Outcome",
    "Plot",
    "RunRecord",
    "Scale",
    "Study",
    "Table",
    "Verdict",
    "get_study",
    "list_studies",
]


def list_studies(pattern: str | None = None) -> list[str]:
    """Registered study names (built-in and from plugin distributions), sorted, without importing study code."""
    return registry.list_names("studies", pattern)


def get_study(name: str) -> Study:
    """The study registered as ``name`` (or ``distribution:name``), loaded; one clear error naming the known ones."""
    try:
        entry = registry.lookup("studies", name)
    except UnknownNameError:
        known = ", ".join(list_studies()) or "(none installed)"
        raise UnknownNameError(f"unknown study {name!r}; known studies: {known}") from None
    obj = entry.load()
    study = obj() if isinstance(obj, type) else obj
    if not isinstance(study, Study):
        raise PluginError(
            f"study plugin {entry.provenance} is a {type(study).__name__}, not a normlight.studies.Study instance"
        )
    if not study.name:
        study.name = entry.name
    return study
