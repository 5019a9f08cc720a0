"""The layering in docs/architecture.md, enforced by parsing every import in normlight (function-level ones too).

Layers from the bottom: errors -> plugins, registry -> distributed, layers -> norms, residuals, mixers, poolings,
depth -> blocks -> models -> tasks, data, tracking, diagnostics, testing, analysis -> sweep -> studies -> cli. A
module may import its own layer and below, never above; the package ``__init__`` (the public facade) and
``__main__`` are the only exceptions.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.helpers import ROOT

PACKAGE = ROOT / "normlight"

# first path component below normlight/ -> layer (a higher number may import a lower one, not the reverse)
LAYERS = {
    "errors": 0,
    "plugins": 1,
    "registry": 1,
    "distributed": 2,
    "layers": 2,
    "norms": 3,
    "residuals": 3,
    "mixers": 3,
    "poolings": 3,
    "depth": 3,
    "blocks": 4,
    "models": 5,
    "tasks": 6,
    "data": 6,
    "tracking": 6,
    "diagnostics": 6,
    "testing": 6,
    "analysis": 6,
    "sweep": 7,
    "studies": 8,
    "cli": 9,
}
FACADE = {"normlight", "normlight.__main__"}
PLAIN_TORCH = (
    "errors",
    "plugins",
    "registry",
    "distributed",
    "layers",
    "norms",
    "residuals",
    "mixers",
    "poolings",
    "depth",
    "blocks",
    "models",
)


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imports(name: str) -> set[str]:
    """Every module ``name`` imports, at any depth of its code, resolved to a normlight module where it is one."""
    path = MODULES[name]
    return imports_in(path.read_text(), name if path.name == "__init__.py" else name.rpartition(".")[0])


def imports_in(source: str, package: str) -> set[str]:
    """The modules imported anywhere in ``source`` (a module of ``package``), relative imports resolved."""
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(
                    package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else [])
                )
            for a in node.names:  # `from normlight.x import y` imports the module normlight.x.y if there is one
                found.add(f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base)
    return found


def layer(name: str) -> int | None:
    parts = name.split(".")
    return LAYERS.get(parts[1]) if len(parts) > 1 and parts[0] == "normlight" else None


GRAPH = {name: {m for m in imports(name) if m in MODULES} for name in MODULES}


def test_every_module_has_a_layer():
    missing = sorted(n for n in MODULES if n not in FACADE and layer(n) is None)
    assert not missing, f"add these to LAYERS and docs/architecture.md: {missing}"


@pytest.mark.parametrize("name", sorted(n for n in MODULES if n not in FACADE))
def test_imports_point_down(name):
    upward = sorted(m for m in GRAPH[name] if m not in FACADE and layer(m) > layer(name))
    assert not upward, f"{name} (layer {layer(name)}) imports from a higher layer: {upward}"


@pytest.mark.parametrize("name", sorted(n for n in MODULES if n.split(".")[1:2] and n.split(".")[1] in PLAIN_TORCH))
def test_library_below_tasks_is_plain_torch(name):
    """norms, blocks, models (and what they stand on) import no Lightning, MLflow or cli: usable from any loop."""
    bad = sorted(m for m in imports(name) if m.split(".")[0] in ("lightning", "pytorch_lightning", "mlflow"))
    assert not bad, f"{name} imports {bad}"


def test_only_tracking_talks_to_mlflow_and_data_knows_no_models():
    for name in MODULES:
        mods = imports(name)
        if any(m.split(".")[0] == "mlflow" for m in mods):
            assert name.startswith("normlight.tracking."), f"{name} imports mlflow; go through normlight.tracking"
        if name.startswith("normlight.data"):
            assert not [m for m in mods if layer(m) in (3, 4, 5)], f"{name} imports norms/blocks/models"


def test_no_import_cycles():
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(n: str) -> None:
        state[n] = 1
        stack.append(n)
        for m in sorted(GRAPH[n]):
            if m in FACADE:
                continue
            if state.get(m) == 1:
                cycle = stack[stack.index(m) :] + [m]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if m not in state:
                visit(m)
        stack.pop()
        state[n] = 2

    for n in sorted(MODULES):
        if n not in state and n not in FACADE:
            visit(n)


def test_the_checker_sees_function_level_and_relative_imports():
    """Guard against a checker that cannot fail: imports hidden in a function or written relatively are seen."""
    src = "def f():\n    from normlight.cli import train\n    from ..blocks import base\n    import mlflow\n"
    found = imports_in(src, "normlight.norms")
    assert {"normlight.cli.train", "normlight.blocks.base", "mlflow"} <= found
    assert layer("normlight.cli.train") > layer("normlight.norms.layernorm") > layer("normlight.registry")
