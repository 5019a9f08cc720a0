"""``make mutation``: mutation testing (mutmut) of the modules whose tests must catch bugs, one target at a time.

Each target is a set of modules and the tests that guard them. For a target, a scratch copy of the package,
the tests and the configs is made under ``.mutation/<target>/`` with a ``[tool.mutmut]`` section naming only
that target's modules and tests (mutmut reads its settings from the working directory), then ``mutmut run``
mutates each line, runs the covering tests per mutant in forked children and records killed / survived.
The summary (mutants, killed, survived, timeout, score, wall time per target) is printed and kept in
``docs/results/mutation.json`` (one entry per target, replaced when that target is run again), from which
``docs/results/mutation.md`` is rendered (and the score table between markers in docs/testing.md): per target
the counts, the raw score and the score without equivalent mutants, and every surviving mutant with its stable
key (``<path>::<Qualname>: <old line> => <new line>``) and the verdict docs/testing.md gives it
(``- `KEY` equivalent|caught|accepted: why``), else UNEXPLAINED. ``mutmut results`` / ``mutmut show NAME``
inside the target's folder list the surviving mutants and their diffs.

    python tools/mutation.py                 # every target (slow: see docs/testing.md)
    python tools/mutation.py repbn fold      # some targets
    python tools/mutation.py --list          # the targets
    python tools/mutation.py --render        # re-render docs/results/mutation.md from mutation.json
    python tools/mutation.py --rekey repbn   # add keys to a recorded run from its .mutation/ folder
    python tools/mutation.py fold --check 'x_fold__mutmut_(9|160)$' -- tests/models/test_fold.py -k refuses
                                             # apply each matching mutant of a run target, run those tests
"""

from __future__ import annotations

import argparse
import ast
import difflib
import fnmatch
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / ".mutation"
RESULTS = ROOT / "docs" / "results" / "mutation.json"
REPORT = ROOT / "docs" / "results" / "mutation.md"
EXPLANATIONS = ROOT / "docs" / "testing.md"

# target -> (modules mutmut may mutate, the tests that guard them); norms and blocks are one target per family
TARGETS: dict[str, tuple[list[str], list[str]]] = {
    "fold": (["normlight/models/fold.py"], ["tests/models/test_fold.py"]),
    "compare": (["normlight/tracking/compare.py"], ["tests/tracking/test_compare.py"]),
    "sweep_state": (
        ["normlight/tracking/sweep_runs.py"],
        # test_sweep_runs calls every function directly; tests/sweep/test_local.py reaches the same functions
        # only through whole sweeps (about 130 s per surviving mutant), so it is not selected
        ["tests/tracking/test_sweep_runs.py", "tests/sweep/test_spec.py"],
    ),
    "blocks": (
        ["normlight/blocks/*"],
        # the residual/mixer tests reach Block's plugin hooks (build_residuals, build_mixer) and their errors
        ["tests/blocks", "tests/mixers", "tests/residuals"],
    ),
}
for _path in sorted((ROOT / "normlight" / "norms").glob("*.py")):
    if _path.stem not in ("__init__", "factory", "_common", "_batchstats"):
        # the family's own file plus the suite-wide norm checks (bf16, masks, sync flag, contract); mutmut runs
        # only the tests that reach the mutated function
        TARGETS[_path.stem] = ([f"normlight/norms/{_path.name}"], ["tests/norms"])
TARGETS["norms_shared"] = (
    ["normlight/norms/_common.py", "normlight/norms/_batchstats.py", "normlight/norms/factory.py"],
    ["tests/norms"],
)

PYTEST_ARGS = ["-p", "no:cacheprovider", "-m", "not slow and not distributed", "-x", "-q"]
# tests left out of a target: the three-process claim race spends ~100 s per mutant in three subprocesses, which
# import the unmutated package (mutmut switches mutants inside the test process only); the single-process claim
# tests of the same file call every function it reaches in the test process
DESELECT: dict[str, list[str]] = {
    "sweep_state": ["tests/tracking/test_sweep_runs.py::test_three_processes_claim_each_point_exactly_once"],
    # the norm x placement x family smoke matrix (532 cases, ~25 s) checks only "builds, finite": it reaches every
    # block function, so each surviving mutant would run all of it; the placement tests check the formulas
    "blocks": ["tests/blocks/placements/test_norm_matrix.py::test_builds_forward_backward_finite"],
}


def pytest_args(name: str) -> list[str]:
    """The pytest options of target ``name``: the common ones plus a ``--deselect`` per left-out test."""
    return PYTEST_ARGS + [a for t in DESELECT.get(name, []) for a in ("--deselect", t)]


def toml_list(items: list[str]) -> str:
    """A TOML array of strings."""
    return "[" + ", ".join(json.dumps(i) for i in items) + "]"


def prepare(name: str) -> Path:
    """A fresh scratch folder for ``name``: package, tests, configs and a pyproject with the mutmut settings."""
    modules, tests = TARGETS[name]
    missing = [t for t in tests if not (ROOT / t).exists()]
    if missing:
        raise SystemExit(f"error: target {name!r}: no test file {', '.join(missing)}")
    d = WORK / name
    shutil.rmtree(d, ignore_errors=True)
    d.mkdir(parents=True)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for sub in ("normlight", "tests", "configs"):
        shutil.copytree(ROOT / sub, d / sub, ignore=ignore)
    text = (ROOT / "pyproject.toml").read_text()
    text += (
        "\n[tool.mutmut]\n"
        'source_paths = ["normlight"]\n'
        f"only_mutate = {toml_list(modules)}\n"
        'also_copy = ["configs"]\n'
        f"pytest_add_cli_args = {toml_list(pytest_args(name))}\n"
        f"pytest_add_cli_args_test_selection = {toml_list(tests)}\n"
    )
    (d / "pyproject.toml").write_text(text)
    return d


def counts(d: Path, env: dict) -> dict:
    """mutmut's own tally for the target (``mutmut export-cicd-stats``): killed, survived, no_tests, timeout..."""
    subprocess.run([sys.executable, "-m", "mutmut", "export-cicd-stats"], cwd=d, env=env, capture_output=True)
    path = d / "mutants" / "mutmut-cicd-stats.json"
    return json.loads(path.read_text()) if path.exists() else {}


def survivors(d: Path, env: dict) -> list[dict]:
    """The surviving mutants (``mutmut results``), each as ``{"name": mutmut's name, "key": its stable key}``."""
    res = subprocess.run([sys.executable, "-m", "mutmut", "results"], cwd=d, env=env, capture_output=True, text=True)
    names = [ln.split(":")[0].strip() for ln in res.stdout.splitlines() if ln.strip().endswith("survived")]
    parsed: dict[Path, dict] = {}  # each mutated file parsed once, not once per survivor
    return [{"name": n, "key": mutant_key(d, n, parsed)} for n in names]


def _functions(path: Path) -> dict[str, list[str]]:
    """The source lines of every function in a file mutmut wrote, by name (mutant and original copies)."""
    text = path.read_text()
    lines = text.splitlines()
    out = {}
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            out[node.name] = lines[node.lineno - 1 : node.end_lineno]
    return out


def _qualname(base: str) -> str:
    """``Class.method`` or ``function`` from mutmut's mangled name (it prefixes ``x_`` / ``xǁClassǁ``)."""
    return base[2:] if base.startswith("x_") else ".".join(p for p in base[1:].split("ǁ") if p)


def apply_mutant(d: Path, name: str) -> None:
    """Write mutant ``name`` over its function in the scratch copy of the module, found by class and name.

    Not ``mutmut apply``: mutmut 3.8 replaces the first function of that name in the file, which for a method
    (``forward``, ``__init__``) in a file of several classes is often another class's.
    """
    module, _, mangled = name.rpartition(".")
    path = Path(*module.split(".")).with_suffix(".py")
    text = (d / "mutants" / path).read_text()
    node = next(
        n
        for n in ast.walk(ast.parse(text))
        if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef) and n.name == mangled
    )
    *classes, func = _qualname(mangled.rsplit("__mutmut_", 1)[0]).split(".")
    body = text.splitlines()[node.lineno - 1 : node.end_lineno]
    body[0] = body[0].replace(mangled, func, 1)
    target = d / path
    source = target.read_text()
    scope = ast.parse(source).body
    for cls in classes:
        scope = next(c for c in scope if isinstance(c, ast.ClassDef) and c.name == cls).body
    fn = next(f for f in scope if isinstance(f, ast.FunctionDef | ast.AsyncFunctionDef) and f.name == func)
    lines = source.splitlines()
    lines[fn.lineno - 1 : fn.end_lineno] = body  # lineno is the def line: decorators stay
    target.write_text("\n".join(lines) + "\n")


def mutant_key(d: Path, name: str, parsed: dict[Path, dict] | None = None) -> str:
    """A survivor's key, stable while the line it changes is: ``<path>::<Qualname>: <old> => <new>``.

    mutmut numbers the mutants of a function in order (``...x_fold__mutmut_17``), so any edit of the function
    renumbers them; the key names the function and the changed line(s) instead (stripped; several joined by
    `` ⏎ ``), read from the mutant and original copies mutmut keeps in ``mutants/``.
    ``parsed`` caches the parsed files across calls.
    ``normlight.norms.repbn.xǁRepBNǁ__init____mutmut_2`` ->
    ``norms/repbn.py::RepBN.__init__: momentum: float | None = 0.1, => momentum: float | None = 1.1,``
    """
    module, _, mangled = name.rpartition(".")
    base = mangled.rsplit("__mutmut_", 1)[0]
    path = Path(*module.split(".")).with_suffix(".py")
    file = d / "mutants" / path
    funcs = parsed[file] if parsed is not None and file in parsed else _functions(file)
    if parsed is not None:
        parsed[file] = funcs
    orig = funcs[base + "__mutmut_orig"][1:]  # without the def line, which holds the copy's name
    mutant = funcs[mangled][1:]
    old, new = [], []
    for op, i1, i2, j1, j2 in difflib.SequenceMatcher(None, orig, mutant, autojunk=False).get_opcodes():
        if op != "equal":
            old += [s.strip() for s in orig[i1:i2]]
            new += [s.strip() for s in mutant[j1:j2]]
    qualname = _qualname(base)
    if not old and not new:  # the change is on the def line itself (a default argument on one line)
        own = qualname.rsplit(".", 1)[-1]
        old = [funcs[base + "__mutmut_orig"][0].strip().replace(base + "__mutmut_orig", own)]
        new = [funcs[mangled][0].strip().replace(mangled, own)]
    return f"{path.relative_to('normlight').as_posix()}::{qualname}: {' ⏎ '.join(old)} => {' ⏎ '.join(new)}"


def source_commit() -> str:
    """The short commit of the code under test, with ``+dirty`` when modules or tests differ from it."""
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    dirty = subprocess.run(
        ["git", "status", "--porcelain", "--", "normlight", "tests"], cwd=ROOT, capture_output=True, text=True
    )
    return head.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


def run_target(name: str, max_children: int) -> dict:
    """Run mutmut for one target; returns its counts, score, survivors and wall time."""
    commit = source_commit()
    d = prepare(name)
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env.update(OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", PYTHONPATH=str(d))
    mutmut = Path(sys.executable).with_name("mutmut")
    start = time.monotonic()
    proc = subprocess.run(
        [str(mutmut), "run", "--max-children", str(max_children)], cwd=d, env=env, capture_output=True, text=True
    )
    seconds = time.monotonic() - start
    (d / "mutmut-run.log").write_text(proc.stdout + "\n--- stderr ---\n" + proc.stderr)
    c = counts(d, env)
    # score = killed / (killed + survived + no_tests): a mutant no selected test reaches counts as a survivor
    caught = c.get("killed", 0) + c.get("timeout", 0)
    judged = caught + c.get("survived", 0) + c.get("no_tests", 0) + c.get("suspicious", 0)
    return {
        "target": name,
        "commit": commit,
        "modules": TARGETS[name][0],
        "tests": TARGETS[name][1],
        "deselected": DESELECT.get(name, []),
        "rc": proc.returncode,
        **{k: c.get(k, 0) for k in ("total", "killed", "timeout", "survived", "no_tests", "suspicious", "skipped")},
        "score": round(100.0 * caught / judged, 1) if judged else None,
        "survivors": survivors(d, env),
        "seconds": round(seconds),
    }


def check(name: str, pattern: str, extra: list[str]) -> int:
    """Apply each mutant of target ``name`` matching ``pattern`` (a regex) and run the tests ``extra`` on it.

    Uses the folder of the target's last run: its tests are refreshed from the work tree, ``apply_mutant``
    writes the mutant into the folder's copy of the module, the tests run there, the module is restored.
    ``extra`` are the pytest arguments (the tests to run). Prints KILLED or SURVIVES per mutant; returns 1 if
    any survives.
    """
    d = WORK / name
    metas = sorted((d / "mutants").rglob("*.meta"))
    if not metas:
        raise SystemExit(f"error: target {name!r} has no mutmut run in {d}; run it first")
    names = sorted(k for m in metas for k in json.loads(m.read_text())["exit_code_by_key"] if re.search(pattern, k))
    if not names:
        raise SystemExit(f"error: no mutant of {name!r} matches {pattern!r}")
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.rmtree(d / "tests")
    shutil.copytree(ROOT / "tests", d / "tests", ignore=ignore)
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env.update(OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", PYTHONPATH=str(d))
    survived = 0
    restore(name, d)  # the work tree's modules, not the copies of the last run
    for mutant in names:
        apply_mutant(d, mutant)
        try:
            res = subprocess.run(
                [sys.executable, "-m", "pytest", *pytest_args(name), *extra],
                cwd=d,
                env=env,
                capture_output=True,
                text=True,
            )
        finally:
            restore(name, d)
        survived += res.returncode == 0
        last = (res.stdout.strip().splitlines() or ["(no output)"])[-1]
        print(f"{mutant}: {'SURVIVES' if res.returncode == 0 else 'KILLED'}  ({last})", flush=True)
    return 1 if survived else 0


def restore(name: str, d: Path) -> None:
    """Copy target ``name``'s modules from the work tree into folder ``d`` (``*`` spans folders, as in mutmut)."""
    for src in (ROOT / "normlight").rglob("*.py"):
        rel = src.relative_to(ROOT)
        if any(fnmatch.fnmatch(str(rel), pattern) for pattern in TARGETS[name][0]):
            shutil.copy(src, d / rel)


def load_results() -> dict[str, dict]:
    """The recorded per-target results (``docs/results/mutation.json``), in target order."""
    if not RESULTS.exists():
        return {}
    return {r["target"]: r for r in json.loads(RESULTS.read_text())}


def save_results(results: dict[str, dict]) -> None:
    """Write mutation.json (targets in TARGETS order) and re-render mutation.md."""
    order = [t for t in TARGETS if t in results] + sorted(t for t in results if t not in TARGETS)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps([results[t] for t in order], indent=1, ensure_ascii=False) + "\n")
    REPORT.write_text(render([results[t] for t in order]))
    write_table([results[t] for t in order])


VERDICTS = ("equivalent", "caught", "accepted")
# a list item "- `KEY` verdict: why" (double backticks when the key holds one)
EXPLANATION = re.compile(r"^\s*[-*] (`+) ?(?P<key>.+?) ?\1 (?P<verdict>equivalent|caught|accepted):", re.M)


def explanations(text: str) -> list[tuple[str, str, re.Pattern]]:
    """The explanations in ``text``: (key as written, verdict, the pattern it matches; ``*`` is any characters).

    equivalent: no test can observe the change; caught: a test mutmut cannot run per mutant (a subprocess,
    distributed or slow one) kills it, shown with ``--check``; accepted: a real behaviour no test checks.
    """
    out = []
    for m in EXPLANATION.finditer(text):
        key = m.group("key")
        pattern = re.compile(".*".join(re.escape(part) for part in key.split("*")), re.S)
        out.append((key, m.group("verdict"), pattern))
    return out


def verdict(key: str | None, rules: list[tuple[str, str, re.Pattern]]) -> str | None:
    """The verdict of the first explanation whose key matches the survivor's ``key``; None if unexplained."""
    for _, v, pattern in rules:
        if key is not None and pattern.fullmatch(key):
            return v
    return None


def code(text: str) -> str:
    """``text`` as a markdown code span (double backticks when it holds a backtick)."""
    return f"`` {text} ``" if "`" in text else f"`{text}`"


def tally(r: dict, rules: list) -> dict:
    """A target's verdict counts and both scores.

    raw = (killed + timeout) / judged, judged = killed + timeout + survived + no tests + suspicious;
    without equivalents = (killed + timeout + caught) / (judged - equivalent), the textbook mutation score.
    """
    found = [verdict(s.get("key"), rules) if isinstance(s, dict) else None for s in r["survivors"]]
    c = {v: found.count(v) for v in VERDICTS}
    c["unexplained"] = found.count(None)
    caught = r["killed"] + r["timeout"]
    judged = caught + r["survived"] + r["no_tests"] + r["suspicious"]
    c["raw"] = round(100.0 * caught / judged, 1) if judged else None
    rest = judged - c["equivalent"]
    c["score"] = round(100.0 * (caught + c["caught"]) / rest, 1) if rest else None
    return c


def pct(score: float | None) -> str:
    """A score for the table; a target without mutants (nothing left to mutate) has none."""
    return "no mutants" if score is None else f"{score}%"


def table(rows: list[dict], rules: list) -> list[str]:
    """The per-target score table (markdown lines), with an overall row."""
    lines = [
        "| target | commit | mutants | killed | timeout | survived | no tests | equivalent | caught | accepted "
        "| unexplained | raw score | score without equivalents | wall time |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    tot = {k: 0 for k in ("total", "killed", "timeout", "survived", "no_tests", "suspicious", "seconds")}
    vt = {k: 0 for k in (*VERDICTS, "unexplained")}
    for r in rows:
        c = tally(r, rules)
        for k in tot:
            tot[k] += r[k]
        for k in vt:
            vt[k] += c[k]
        lines.append(
            f"| {r['target']} | {r['commit']} | {r['total']} | {r['killed']} | {r['timeout']} | {r['survived']} | "
            f"{r['no_tests']} | {c['equivalent']} | {c['caught']} | {c['accepted']} | {c['unexplained']} | "
            f"{pct(c['raw'])} | **{pct(c['score'])}** | {r['seconds']} s |"
        )
    judged = tot["killed"] + tot["timeout"] + tot["survived"] + tot["no_tests"] + tot["suspicious"]
    raw = round(100.0 * (tot["killed"] + tot["timeout"]) / judged, 1) if judged else None
    rest = judged - vt["equivalent"]
    score = round(100.0 * (tot["killed"] + tot["timeout"] + vt["caught"]) / rest, 1) if rest else None
    lines.append(
        f"| **all** | | {tot['total']} | {tot['killed']} | {tot['timeout']} | {tot['survived']} | {tot['no_tests']} | "
        f"{vt['equivalent']} | {vt['caught']} | {vt['accepted']} | {vt['unexplained']} | {pct(raw)} | **{pct(score)}** | "
        f"{tot['seconds']} s |"
    )
    return lines


def render(rows: list[dict]) -> str:
    """The markdown report: the score table, the tests per target and every survivor with its verdict."""
    rules = explanations(EXPLANATIONS.read_text() if EXPLANATIONS.exists() else "")
    lines = [
        "# Mutation score",
        "",
        "Written by `python tools/mutation.py` (`make mutation`); do not edit by hand. Survivors are explained in",
        "[docs/testing.md](../testing.md), matched by their key (the function and the changed line). raw score =",
        "(killed + timeout) / (killed + timeout + survived + no tests + suspicious); score without equivalents =",
        "(killed + timeout + caught) / (that - equivalent). Wall times were taken on a shared 2-core machine: they",
        "show the order of magnitude only.",
        "",
        *table(rows, rules),
    ]
    lines += ["", "## Tests per target", ""]
    lines += [
        f"- {r['target']}: `{' '.join(r['modules'])}` <- `{' '.join(r['tests'])}`"
        + "".join(f" without `{t}`" for t in r.get("deselected", []))
        for r in rows
    ]
    lines += ["", "## Surviving mutants", "", "Each line: the key, the target, mutmut's name, the verdict.", ""]
    used = set()
    for r in rows:
        for s in r["survivors"]:
            s = s if isinstance(s, dict) else {"name": s, "key": None}
            v = verdict(s["key"], rules)
            used.update(k for k, _, p in rules if s["key"] is not None and p.fullmatch(s["key"]))
            key = code(s["key"]) if s["key"] else "(no key: recorded before keys; re-run the target)"
            lines.append(f"- {key} ({r['target']}, `{s['name']}`): {v or '**UNEXPLAINED**'}")
    if not any(r["survivors"] for r in rows):
        lines.append("none")
    unexplained = sum(tally(r, rules)["unexplained"] for r in rows)
    stale = [k for k, _, _ in rules if k not in used]
    lines += ["", f"Unexplained survivors: {unexplained}.", ""]
    lines += [f"Explanations in docs/testing.md that match no recorded survivor: {len(stale)}.", ""]
    lines += [f"- {code(k)}" for k in stale]
    return "\n".join(lines) + ("\n" if stale else "")


TABLE_START, TABLE_END = "<!-- mutation-table: written by tools/mutation.py -->", "<!-- /mutation-table -->"


def write_table(rows: list[dict]) -> None:
    """Replace the score table between the markers in docs/testing.md (left alone if the markers are absent)."""
    if not EXPLANATIONS.exists():
        return
    text = EXPLANATIONS.read_text()
    if TABLE_START not in text or TABLE_END not in text:
        return
    head, rest = text.split(TABLE_START, 1)
    _, tail = rest.split(TABLE_END, 1)
    body = "\n".join(["", *table(rows, explanations(text)), ""])
    EXPLANATIONS.write_text(head + TABLE_START + body + TABLE_END + tail)


def rekey(name: str) -> None:
    """Give the recorded survivors of ``name`` their keys, from the target's folder if it holds the same run."""
    recorded = load_results()
    d = WORK / name
    env = {**os.environ, "PYTHONPATH": str(d)}
    if name not in recorded or not (d / "mutants").is_dir():
        raise SystemExit(f"error: target {name!r} has no recorded run with a folder in {d}")
    names = [s["name"] if isinstance(s, dict) else s for s in recorded[name]["survivors"]]
    found = survivors(d, env)
    if sorted(names) != sorted(s["name"] for s in found):
        raise SystemExit(f"error: {d} holds a different run of {name!r} than mutation.json; re-run the target")
    recorded[name]["survivors"] = found
    save_results(recorded)


def main(argv: list[str] | None = None) -> int:
    """Run the named targets (all by default), print one summary line per target and record the results."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("targets", nargs="*", help="targets to run (default: all)")
    p.add_argument("--list", action="store_true", help="list the targets and exit")
    p.add_argument("--render", action="store_true", help="only re-render docs/results/mutation.md and exit")
    p.add_argument("--check", metavar="PATTERN", help="with one target: apply its mutants matching PATTERN, run tests")
    p.add_argument("--rekey", action="store_true", help="add keys to the named targets' recorded survivors")
    p.add_argument("--max-children", type=int, default=2, help="parallel mutant runs (default 2)")
    argv = sys.argv[1:] if argv is None else argv
    extra = argv[argv.index("--") + 1 :] if "--" in argv else []
    args = p.parse_args(argv[: argv.index("--")] if "--" in argv else argv)
    if args.list:
        for name, (modules, tests) in TARGETS.items():
            print(f"{name:17s} {' '.join(modules)}  <-  {' '.join(tests)}")
        return 0
    if args.check:
        if len(args.targets) != 1 or args.targets[0] not in TARGETS:
            print("error: --check needs exactly one known target", file=sys.stderr)
            return 2
        return check(args.targets[0], args.check, extra)
    if args.render:
        save_results(load_results())
        return 0
    if args.rekey:
        for name in args.targets:
            rekey(name)
        return 0
    unknown = [t for t in args.targets if t not in TARGETS]
    if unknown:
        print(f"error: unknown mutation target(s) {', '.join(unknown)}; see --list", file=sys.stderr)
        return 2
    ok = True
    for name in args.targets or list(TARGETS):
        r = run_target(name, args.max_children)
        ok = ok and r["rc"] == 0
        recorded = load_results()  # read again: keep what another invocation recorded meanwhile
        recorded[name] = r
        save_results(recorded)  # after every target, so an interrupted full run keeps what it measured
        print(
            f"{name:17s} mutants {r['total']}  killed {r['killed']}  timeout {r['timeout']}  "
            f"survived {r['survived']}  no tests {r['no_tests']}  score {r['score']}%  {r['seconds']} s  "
            f"(rc {r['rc']})",
            flush=True,
        )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
