"""Entry-point discovery: which distributions offer which norms, placements, models, analyses, poolings,
residuals, mixers and depth regularizers.

Discovery only reads package metadata (``importlib.metadata``); no plugin code is imported until a
plugin is selected or listed with ``load=True``. A plugin that fails to import is recorded as broken
(with its distribution, version and the error in one line) and raises :class:`PluginError` only when
it is selected, so the rest of the catalog keeps working.
"""

from __future__ import annotations

import importlib.metadata as md
from dataclasses import dataclass, field
from typing import Any

from normlight.errors import PluginError

GROUPS = {
    "norms": "normlight.norms",
    "placements": "normlight.placements",
    "models": "normlight.models",
    "analyses": "normlight.analyses",
    "poolings": "normlight.poolings",
    "residuals": "normlight.residuals",
    "mixers": "normlight.mixers",
    "depth_regularizers": "normlight.depth_regularizers",
    "studies": "normlight.studies",
}

_cache: dict[str, list["PluginEntry"]] = {}


def singular(kind: str) -> str:
    """``norms`` -> ``norm``, ``studies`` -> ``study``: the kind as one plugin of it is called."""
    return kind[:-3] + "y" if kind.endswith("ies") else kind[:-1]


@dataclass(eq=False)
class PluginEntry:
    """One entry point of one distribution, loaded on demand."""

    kind: str  # a key of GROUPS: "norms", "placements", "models", "poolings", ...
    name: str  # the entry-point name as the distribution wrote it
    value: str  # "module:attr"
    dist: str  # distribution name, e.g. "normlight"
    version: str
    _entry_point: md.EntryPoint = field(repr=False)
    obj: Any = field(default=None, repr=False)
    error: str | None = None
    loaded: bool = False

    @property
    def qualified(self) -> str:
        """``distribution:name``, which always selects this entry."""
        return f"{self.dist}:{self.name}"

    @property
    def provenance(self) -> str:
        """Human-readable origin: ``name (dist 1.2, module:attr)``."""
        return f"'{self.name}' (distribution {self.dist} {self.version}, entry point {self.value})"

    @property
    def status(self) -> str:
        """``ok`` once imported, ``broken`` if the import failed, ``not loaded`` before either."""
        if self.error is not None:
            return "broken"
        return "ok" if self.loaded else "not loaded"

    def load(self) -> Any:
        """Import the entry point once; raise :class:`PluginError` naming the plugin if it fails."""
        if not self.loaded and self.error is None:
            try:
                self.obj = self._entry_point.load()
                self.loaded = True
            except Exception as exc:  # any import-time failure is the plugin's, not ours
                first = (str(exc).strip().splitlines() or [""])[0]
                self.error = f"{type(exc).__name__}: {first}"
                self._exc = exc
        if self.error is not None:
            raise PluginError(
                f"{singular(self.kind)} plugin {self.provenance} failed to import: {self.error}. "
                f"Fix or reinstall '{self.dist}' (pip install --force-reinstall {self.dist}), "
                f"or choose another {singular(self.kind)}; `normlight plugins list --load` shows what works."
            ) from getattr(self, "_exc", None)
        return self.obj


def entries(kind: str) -> list[PluginEntry]:
    """All entry points of a kind (a key of ``GROUPS``: ``norms``, ``placements``, ...), cached after the first scan."""
    if kind not in GROUPS:
        raise ValueError(f"unknown plugin kind {kind!r}; choose one of {sorted(GROUPS)}")
    if kind not in _cache:
        group = GROUPS[kind]
        found: dict[tuple[str, str], PluginEntry] = {}
        for dist in md.distributions():
            dist_name = dist.metadata["Name"] or "unknown"
            for ep in dist.entry_points:
                if ep.group != group:
                    continue
                key = (dist_name.lower().replace("_", "-"), ep.name)
                # the same distribution can be visible twice on sys.path (e.g. editable + build dir)
                found.setdefault(key, PluginEntry(kind, ep.name, ep.value, dist_name, dist.version, ep))
        _cache[kind] = sorted(found.values(), key=lambda e: (e.name, e.dist))
    return _cache[kind]


def refresh() -> None:
    """Forget the scan, e.g. after installing a plugin distribution into a running interpreter."""
    _cache.clear()
