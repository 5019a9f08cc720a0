"""``normlight plugins list`` (the catalog with distributions and status) and ``normlight plugins new NAME``.

``plugins new NAME [--kind norm|pooling|residual|mixer] [--dir PATH] [--plugin NAME]`` scaffolds a plugin package
of that kind (a norm by default; ``--norm`` is the old spelling of ``--plugin``). The package installs as it is
(``pip install -e PATH/NAME``) and passes its own tests unchanged: a numpy reference test of its plugin and
normlight's conformance kit. The author then replaces the formula in ``<package>/<kind>s.py`` and the reference
in the test. See docs/plugins.md.
"""

from __future__ import annotations

import argparse
import json
import keyword
import re
import sys
from pathlib import Path

from normlight import __version__, plugins, registry
from normlight.errors import NormlightError

_DIST_RE = re.compile(r"^[A-Za-z][A-Za-z0-9._-]*[A-Za-z0-9]$")


def _names(dist: str, norm: str | None, kind: str = "norm") -> dict:
    """Distribution, import package, entry-point name and class name derived from the arguments."""
    if not _DIST_RE.match(dist):
        raise ValueError(
            f"NAME {dist!r} is not a valid distribution name: use letters, digits, '-', '_' or '.', "
            "starting with a letter (e.g. normlight-centered-rms)"
        )
    package = re.sub(r"[-.]+", "_", dist).lower()
    norm = norm or re.sub(r"^normlight_", "", package)
    if not norm.isidentifier() or keyword.iskeyword(norm) or not package.isidentifier() or keyword.iskeyword(package):
        raise ValueError(
            f"cannot derive a Python name from {dist!r} / {kind} {norm!r}; pass --norm with a lower_case identifier"
        )
    cls = "".join(part.capitalize() for part in norm.split("_") if part) or "Norm"
    return {
        "dist": dist,
        "package": package,
        "norm": norm,
        "cls": cls,
        "kind": kind,
        "module": f"{kind}s",
        "normlight_min": ".".join(__version__.split(".")[:2]),
    }


PYPROJECT = """\
[build-system]
requires = ["setuptools>=69"]
build-backend = "setuptools.build_meta"

[project]
name = "{dist}"
version = "0.1.0"
description = "A {kind} plugin for normlight: {norm}."
readme = "README.md"
requires-python = ">=3.10"
dependencies = ["normlight>={normlight_min}", "torch"]

[project.optional-dependencies]
test = ["pytest>=8", "numpy"]

# normlight finds the {kind} through this entry point: name = "module:factory"
[project.entry-points."normlight.{module}"]
{norm} = "{package}.{module}:{cls}"

[tool.setuptools]
packages = ["{package}"]

[tool.pytest.ini_options]
testpaths = ["tests"]
"""

INIT = '''\
"""{dist}: the `{norm}` {kind} plugin for normlight (registered in pyproject.toml)."""

__version__ = "0.1.0"
'''

NORMS = '''\
"""The `{norm}` norm. Replace the formula in ``forward`` (and the reference in tests/) with yours.

normlight's norm contract (docs/plugins.md):
- ``{cls}(num_features, **options)`` returns an ``nn.Module`` mapping ``(..., C) -> (..., C)``;
  dim 0 is the batch, the last dim the features, the dims in between positions;
- accept ``device`` and ``dtype`` (timm and FSDP pass them); compute statistics in fp32 for bf16/fp16;
- name ``layer_idx``, ``num_layers`` or ``site`` as parameters to receive the block context;
- a norm whose statistics cross the batch sets ``uses_batch_statistics = True`` and exposes
  ``batch_stat`` / ``running_stat`` (see docs/plugins.md).
"""

from __future__ import annotations

import torch
from torch import nn


class {cls}(nn.Module):
    """RMS normalization with a learnable per-feature gain: ``y = weight * x / sqrt(mean(x^2) + eps)``."""

    description = "{norm}: x / RMS(x) * weight (template; replace with your method)"
    paper = "Your Name et al. YEAR, Title"

    def __init__(self, num_features: int, eps: float = 1e-6, device=None, dtype=None):
        super().__init__()
        self.num_features, self.eps = int(num_features), float(eps)
        self.weight = nn.Parameter(torch.ones(self.num_features, device=device, dtype=dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalize over the last dim."""
        if x.shape[-1] != self.num_features:
            raise ValueError(f"{norm}: expected {{self.num_features}} features in the last dim, got shape {{tuple(x.shape)}}")
        xf = x.float()  # statistics in fp32 for bf16/fp16 inputs
        y = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight.float()
        return y.to(x.dtype)

    def extra_repr(self) -> str:
        return f"{{self.num_features}}, eps={{self.eps}}"
'''

TEST = '''\
"""`{norm}` against an independent numpy formula, then normlight's conformance kit.

Run with the package installed (``pip install -e .``): the kit resolves the name "{norm}" through the
entry point, so this also checks the registration in pyproject.toml.
"""

import numpy as np
import torch

import normlight
from normlight.testing import NormPluginConformance


def test_{norm}_matches_numpy():
    m = normlight.create_norm("{norm}", 8, eps=1e-6)
    with torch.no_grad():
        m.weight.copy_(torch.linspace(0.5, 2.0, 8))
    x = torch.randn(2, 3, 8, generator=torch.Generator().manual_seed(0)) * 3 + 1
    xn, w = x.double().numpy(), m.weight.detach().double().numpy()
    want = w * xn / np.sqrt((xn ** 2).mean(-1, keepdims=True) + 1e-6)
    np.testing.assert_allclose(m(x).detach().double().numpy(), want, rtol=1e-5, atol=1e-6)


class TestConformance(NormPluginConformance):
    """One test per contract check: shape, dtypes (bf16/fp16), channels-first, gradients, state_dict, ..."""

    norm = "{norm}"
    options = {{"eps": 1e-6}}  # the norm_kwargs to check with
    # distributed = True      # opt in for a norm with uses_batch_statistics (2 gloo ranks, a few seconds)
'''

README = """\
# {dist}

A {kind} plugin for [normlight](https://pypi.org/project/normlight/): the `{norm}` {kind}.

```bash
pip install -e .                # or: pip install {dist}
normlight plugins list --kind {module} --load      # shows {norm} from {dist} 0.1.0
```

{usage}

## Develop

Edit the formula in `{package}/{module}.py` and the numpy reference in `tests/test_{norm}.py`, then
run `python -m pytest -q` (the package must be installed: the tests resolve the entry point).

## Publish

```bash
python -m build                 # dist/{package}-0.1.0-py3-none-any.whl and the sdist
python -m twine upload dist/*   # or install the wheel directly: pip install dist/*.whl
```
"""


USAGE = {
    "norm": """```bash
normlight fit --config configs/gpt/nano.yaml --model.norm {norm}
```

```python
import normlight
norm = normlight.create_norm("{norm}", 512, eps=1e-6)
model = normlight.create_model("gpt-tiny", norm="{norm}")
```""",
    "pooling": """```bash
normlight fit --config configs/vit/tiny.yaml --model.model_kwargs.pool {norm}
```

```python
import normlight
model = normlight.create_model("vit-tiny", pool="{norm}")      # or a GPT readout: readout="{norm}"
```""",
    "residual": """```bash
normlight fit --config configs/gpt/nano.yaml --model.model_kwargs.residual {norm}
```

```python
import normlight
model = normlight.create_model("gpt-tiny", residual="{norm}", placement="peri")
```""",
    "mixer": """```bash
normlight fit --config configs/vit/tiny.yaml --model.model_kwargs.mixer {norm}
```

```python
import normlight
model = normlight.create_model("gpt-tiny", mixer="{norm}")     # causal: the template honours supports_causal
```""",
}

POOLINGS = '''\
"""The `{norm}` pooling. Replace the formula in ``forward`` (and the reference in tests/) with yours.

normlight's pooling contract (docs/plugins.md): ``{cls}(dim, **options)`` returns an ``nn.Module`` mapping the
tokens ``(B, T, D)`` to ``(B, D)``; it declares ``norm_position`` ("pre": the model's final norm runs on the
tokens before pooling, "post": on the pooled vector), ``uses_class_token`` and ``needs_hidden_states``; name
``num_heads`` or ``num_layers`` as parameters to receive them.
"""

from __future__ import annotations

import torch
from torch import nn


class {cls}(nn.Module):
    """Mean over tokens times a learnable per-channel gain: ``y = weight * mean_t x_t``."""

    description = "{norm}: weight * mean over tokens (template; replace with your method)"
    paper = "Your Name et al. YEAR, Title"
    norm_position = "post"
    uses_class_token = False
    needs_hidden_states = False

    def __init__(self, dim: int, device=None, dtype=None):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim, device=device, dtype=dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, D) -> (B, D)."""
        return x.mean(dim=1) * self.weight.to(x.dtype)
'''

RESIDUALS = '''\
"""The `{norm}` residual connection. Replace the formula in ``forward`` (and the reference in tests/) with yours.

normlight's residual contract (docs/plugins.md): ``{cls}(dim, **options)`` returns an ``nn.Module``; at the
branch sites it declares (``sites``, default attn and mlp) the placement calls ``forward(x, branch)`` where it
used to compute ``x + branch``; name ``site``, ``layer_idx`` or ``num_layers`` as parameters to receive them.
"""

from __future__ import annotations

import torch
from torch import nn


class {cls}(nn.Module):
    """A learnable scalar on the branch, initialised at 1: ``y = x + scale * branch``."""

    description = "{norm}: x + scale * F(x), learnable scale init 1 (template; replace with your method)"
    paper = "Your Name et al. YEAR, Title"
    sites = ("attn", "mlp")

    def __init__(self, dim: int, device=None, dtype=None):
        super().__init__()
        self.scale = nn.Parameter(torch.ones((), device=device, dtype=dtype))

    def forward(self, x: torch.Tensor, branch: torch.Tensor) -> torch.Tensor:
        """The stream after the branch joined it."""
        return x + self.scale.to(x.dtype) * branch

    def diagnostics(self) -> dict:
        """Logged by normlight's diagnostics as diag/plugin/<module path>/scale."""
        return {{"scale": float(self.scale.detach())}}
'''

MIXERS = '''\
"""The `{norm}` token mixer. Replace the formula in ``forward`` (and the reference in tests/) with yours.

normlight's mixer contract (docs/plugins.md): ``{cls}(dim, **options)`` returns an ``nn.Module`` with
``forward(x, pos=None)`` mapping ``(B, T, D)`` to ``(B, T, D)``; it replaces attention at ``block.attn``. In a
causal model (GPT) it must take a ``causal`` parameter or declare ``supports_causal = True``.
"""

from __future__ import annotations

import torch
from torch import nn


class {cls}(nn.Module):
    """Causal running mean of the tokens, projected: ``y_t = W (1/t) sum_(s<=t) x_s`` (causal by construction)."""

    description = "{norm}: projected causal running mean of the tokens (template; replace with your method)"
    paper = "Your Name et al. YEAR, Title"
    supports_causal = True

    def __init__(self, dim: int, device=None, dtype=None):
        super().__init__()
        self.proj = nn.Linear(dim, dim, device=device, dtype=dtype)

    def forward(self, x: torch.Tensor, pos: torch.Tensor | None = None) -> torch.Tensor:
        """(B, T, D) -> (B, T, D); ``pos`` is added to the input first."""
        if pos is not None:
            x = x + pos
        t = torch.arange(1, x.shape[1] + 1, device=x.device, dtype=x.dtype).view(1, -1, 1)
        return self.proj(x.cumsum(dim=1) / t)
'''

KIND_TESTS = {}
KIND_TESTS["pooling"] = '''\
"""`{norm}` against an independent numpy formula, then normlight's conformance kit (package must be installed)."""

import numpy as np
import torch

import normlight
from normlight.testing import PoolingPluginConformance


def test_{norm}_matches_numpy():
    m = normlight.create_pooling("{norm}", 8)
    with torch.no_grad():
        m.weight.copy_(torch.linspace(0.5, 2.0, 8))
    x = torch.randn(2, 5, 8, generator=torch.Generator().manual_seed(0))
    want = x.double().numpy().mean(axis=1) * m.weight.detach().double().numpy()
    np.testing.assert_allclose(m(x).detach().double().numpy(), want, rtol=1e-5, atol=1e-6)


class TestConformance(PoolingPluginConformance):
    """One test per contract check: build, shape, dtypes, gradients, state_dict, batch independence, model."""

    pooling = "{norm}"
'''
KIND_TESTS["residual"] = '''\
"""`{norm}` against an independent numpy formula, then normlight's conformance kit (package must be installed)."""

import numpy as np
import torch

import normlight
from normlight.testing import ResidualPluginConformance


def test_{norm}_matches_numpy():
    m = normlight.create_residual("{norm}", 8, site="attn")
    with torch.no_grad():
        m.scale.fill_(0.3)
    g = torch.Generator().manual_seed(0)
    x, f = torch.randn(2, 3, 8, generator=g), torch.randn(2, 3, 8, generator=g)
    want = x.double().numpy() + 0.3 * f.double().numpy()
    np.testing.assert_allclose(m(x, f).detach().double().numpy(), want, rtol=1e-5, atol=1e-6)


class TestConformance(ResidualPluginConformance):
    """One test per contract check: build, shape, gradients, state_dict, model (GPT Pre-/Post-LN, ViT)."""

    residual = "{norm}"
'''
KIND_TESTS["mixer"] = '''\
"""`{norm}` against an independent numpy formula, then normlight's conformance kit (package must be installed)."""

import numpy as np
import torch

import normlight
from normlight.testing import MixerPluginConformance


def test_{norm}_matches_numpy():
    m = normlight.create_mixer("{norm}", 8)
    x = torch.randn(2, 5, 8, generator=torch.Generator().manual_seed(0))
    xn = x.double().numpy()
    running = np.cumsum(xn, axis=1) / np.arange(1, 6)[None, :, None]
    w, b = m.proj.weight.detach().double().numpy(), m.proj.bias.detach().double().numpy()
    np.testing.assert_allclose(m(x).detach().double().numpy(), running @ w.T + b, rtol=1e-5, atol=1e-6)


class TestConformance(MixerPluginConformance):
    """One test per contract check: build, shape, causal, gradients, state_dict, model (ViT and GPT)."""

    mixer = "{norm}"
'''
TEMPLATES = {"norm": NORMS, "pooling": POOLINGS, "residual": RESIDUALS, "mixer": MIXERS}


def scaffold(dist: str, directory: str | Path = ".", norm: str | None = None, kind: str = "norm") -> Path:
    """Write the package ``directory/dist`` for a plugin of ``kind`` (norm, pooling, residual or mixer) named
    ``norm`` (default: derived from ``dist``); return its path. Refuses to overwrite a non-empty directory."""
    if kind not in TEMPLATES:
        raise ValueError(f"cannot scaffold a {kind!r} plugin; choose --kind from {sorted(TEMPLATES)}")
    names = _names(dist, norm, kind)
    taken = {registry.normalize_name(n.rpartition(":")[2]) for n in registry.list_names(f"{kind}s")}
    if registry.normalize_name(names["norm"]) in taken:
        raise ValueError(
            f"a {kind} named {names['norm']!r} is already registered (see `normlight plugins list`); "
            "pass --plugin with a new name"
        )
    root = Path(directory) / dist
    if root.exists() and any(root.iterdir()):
        raise FileExistsError(f"{root} already exists and is not empty; choose another --dir or NAME")
    files = {
        "pyproject.toml": PYPROJECT,
        "README.md": README,
        f"{names['package']}/__init__.py": INIT,
        f"{names['package']}/{names['module']}.py": TEMPLATES[kind],
        f"tests/test_{names['norm']}.py": TEST if kind == "norm" else KIND_TESTS[kind],
    }
    names["usage"] = USAGE[kind].format(**names)
    for rel, template in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(template.format(**names))
    return root


def _plugin_rows(kind: str | None, load: bool) -> list[dict]:
    rows = []
    for k in [kind] if kind else list(plugins.GROUPS):
        pool = plugins.entries(k)
        for e in pool:
            if load:
                try:
                    e.load()
                except NormlightError:
                    pass  # recorded on the entry as broken; shown below
            twins = [
                o for o in pool if o is not e and registry.normalize_name(o.name) == registry.normalize_name(e.name)
            ]
            obj = e.obj if e.loaded else None
            doc = (
                (getattr(obj, "description", None) or (getattr(obj, "__doc__", None) or "").strip().split("\n")[0])
                if obj
                else ""
            )
            rows.append(
                {
                    "kind": plugins.singular(k),
                    "name": e.name,
                    "distribution": e.dist,
                    "version": e.version,
                    "entry_point": e.value,
                    "status": e.status,
                    "error": e.error,
                    "description": doc,
                    "paper": getattr(obj, "paper", "") if obj else "",
                    "duplicate_of": [o.qualified for o in twins],
                }
            )
    return rows


def plugins_list(args: argparse.Namespace) -> int:
    """Print the catalog of norms, placements and models with their distributions."""
    rows = _plugin_rows(args.kind, args.load)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    from rich import box
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    console = Console()
    console.print(f"normlight {__version__} plugins" + ("" if args.load else " (not imported; --load checks each)"))
    # one table per kind, names never wrapped: the catalog stays readable in an 80-column pipe
    for kind in dict.fromkeys(r["kind"] for r in rows):
        table = Table(title=f"{kind}s", title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False)
        table.add_column("name", no_wrap=True)
        table.add_column("distribution", overflow="fold")
        table.add_column("status", no_wrap=True)
        table.add_column("description / problem", overflow="fold", ratio=1)
        for r in (r for r in rows if r["kind"] == kind):
            note = (
                f"{r['error']} (entry point {r['entry_point']})"
                if r["error"]
                else " ".join(x for x in (r["description"], f"[{r['paper']}]" if r["paper"] else "") if x)
            )
            if r["duplicate_of"]:
                note += (
                    f" (name also registered by {', '.join(r['duplicate_of'])}; "
                    f"select as {r['distribution']}:{r['name']})"
                )
            style = "red" if r["status"] == "broken" else None
            # plugin text is data, not markup: "[lowercase ...]" would otherwise vanish
            table.add_row(r["name"], f"{r['distribution']} {r['version']}", r["status"], escape(note), style=style)
        console.print(table)
    return 0


def plugins_new(args: argparse.Namespace) -> int:
    """``normlight plugins new NAME [--kind KIND] [--dir PATH] [--plugin NAME]``: write the package, say what next."""
    try:
        root = scaffold(args.name, args.dir, args.norm, args.kind)
    except (ValueError, FileExistsError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    names = _names(args.name, args.norm, args.kind)
    print(
        f"created {root}  ({args.kind} {names['norm']!r}: class {names['package']}.{names['module']}.{names['cls']})\n"
        f"next:\n  pip install -e {root}\n  cd {root} && python -m pytest -q\n"
        f"  normlight plugins list --kind {names['module']} --load\n  see docs/plugins.md to publish it"
    )
    return 0


def build_parser() -> argparse.ArgumentParser:
    """Arguments of ``normlight plugins list|new``."""
    p = argparse.ArgumentParser(prog="normlight plugins", description="List installed plugins; scaffold new ones.")
    psub = p.add_subparsers(dest="plugins_command", metavar="ACTION", required=True)
    pl = psub.add_parser("list", help="list plugins with their distributions and status")
    pl.add_argument("--kind", choices=list(plugins.GROUPS), help="only this kind")
    pl.add_argument("--json", action="store_true", help="machine-readable output")
    pl.add_argument("--load", action="store_true", help="import each plugin to check it and show its description")
    pl.set_defaults(func=plugins_list)
    pn = psub.add_parser(
        "new",
        help="scaffold a plugin package (see docs/plugins.md)",
        description="Create a plugin package that installs with `pip install -e` and passes its own tests.",
    )
    pn.add_argument("name", metavar="NAME", help="distribution name, e.g. normlight-centered-rms")
    pn.add_argument("--kind", choices=["norm", "pooling", "residual", "mixer"], default="norm", help="plugin kind")
    pn.add_argument("--dir", default=".", help="parent directory of the new package (default: .)")
    pn.add_argument(
        "--plugin",
        "--norm",
        dest="norm",
        help="plugin name to register (default: NAME without 'normlight-', as an identifier)",
    )
    pn.set_defaults(func=plugins_new)
    return p


def main(argv: list[str]) -> int:
    """Entry point of ``normlight plugins`` (argv[0] is ``plugins``)."""
    args = build_parser().parse_args(argv[1:] if argv and argv[0] == "plugins" else argv)
    return args.func(args)
