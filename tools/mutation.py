"""``make mutation``: mutation testing (mutmut) of the modules whose tests must catch bugs, one target at a time.

Each target is a set of modules and the tests that guard them. For a target, a scratch copy of the package,
the tests and the configs is made under ``.mutation/<target>/`` with a ``[tool.mutmut]`` section naming only
that target's modules and tests (mutmut reads its settings from the working directory), then ``mutmut run``
mutates each line, runs the covering tests per mutant in forked children and records killed / survived.
The summary (mutants, killed, survived, timeout, score, wall time per target) is printed and kept in
``docs/results/mutation.json`` (one entry per target, replaced when that target is run again), from which
``docs/results/mutation.md`` is rendered: the per-target table, the overall score and every surviving mutant,
marked explained when docs/testing.md names it (``module.function__mutmut_N[,N...]``). ``mutmut results`` / ``mutmut show NAME`` inside the target's
folder list the surviving mutants and their diffs.

    python tools/mutation.py                 # every target (slow: see docs/testing.md)
    python tools/mutation.py repbn fold      # some targets
    python tools/mutation.py --list          # the targets
    python tools/mutation.py --render        # re-render docs/results/mutation.md from mutation.json
    python tools/mutation.py fold --check 'x_fold__mutmut_(9|160)$' -- tests/models/test_fold.py -k refuses
                                             # apply each matching mutant of a run target, run those tests
"""

from __future__ import annotations

import argparse
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


def survivors(d: Path, env: dict) -> list[str]:
    """Names of the surviving mutants (``mutmut results``)."""
    res = subprocess.run([sys.executable, "-m", "mutmut", "results"], cwd=d, env=env, capture_output=True, text=True)
    return [ln.split(":")[0].strip() for ln in res.stdout.splitlines() if ln.strip().endswith("survived")]


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

    Uses the folder of the target's last run: its tests are refreshed from the work tree, ``mutmut apply``
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
    shutil.rmtree(d / "tests")
    shutil.copytree(ROOT / "tests", d / "tests", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env.update(OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", PYTHONPATH=str(d))
    mutmut = Path(sys.executable).with_name("mutmut")
    survived = 0
    restore(name, d)  # the work tree's modules, not the copies of the last run
    for mutant in names:
        subprocess.run([str(mutmut), "apply", mutant], cwd=d, env=env, check=True, capture_output=True)
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


def explained_names(text: str) -> set[str]:
    """Mutants named in the explanations, as ``module.function__mutmut_N`` (the last two parts of mutmut's name).

    A list of numbers is accepted: ``fold.x_fold__mutmut_24,39`` names ``fold.x_fold__mutmut_24`` and ``..._39``.
    """
    out = set()
    for m in re.finditer(r"(\w+\.x\S*?)__mutmut_(\d+(?:,\d+)*)", text):
        out.update(f"{m.group(1)}__mutmut_{n}" for n in m.group(2).split(","))
    return out


def render(rows: list[dict]) -> str:
    """The markdown report: per-target counts, the overall score and the survivors (explained or not)."""
    explained = explained_names(EXPLANATIONS.read_text() if EXPLANATIONS.exists() else "")
    total = {k: sum(r[k] for r in rows) for k in ("total", "killed", "timeout", "survived", "no_tests", "suspicious")}
    judged = sum(total[k] for k in ("killed", "timeout", "survived", "no_tests", "suspicious"))
    overall = round(100.0 * (total["killed"] + total["timeout"]) / judged, 1) if judged else None
    lines = [
        "# Mutation score",
        "",
        "Written by `python tools/mutation.py` (`make mutation`); do not edit by hand. Survivors are explained in",
        "[docs/testing.md](../testing.md). score = (killed + timeout) / (killed + timeout + survived + no tests +",
        "suspicious). Wall times were taken on a shared 2-core machine: they show the order of magnitude only.",
        "",
        "| target | commit | mutants | killed | timeout | survived | no tests | suspicious | score | wall time |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['target']} | {r['commit']} | {r['total']} | {r['killed']} | {r['timeout']} | {r['survived']} | "
            f"{r['no_tests']} | {r['suspicious']} | {r['score']}% | {r['seconds']} s |"
        )
    lines.append(
        f"| **all** | | {total['total']} | {total['killed']} | {total['timeout']} | {total['survived']} | "
        f"{total['no_tests']} | {total['suspicious']} | **{overall}%** | {sum(r['seconds'] for r in rows)} s |"
    )
    lines += ["", "## Tests per target", ""]
    lines += [
        f"- {r['target']}: `{' '.join(r['modules'])}` <- `{' '.join(r['tests'])}`"
        + "".join(f" without `{t}`" for t in r.get("deselected", []))
        for r in rows
    ]
    lines += ["", "## Surviving mutants", ""]
    unexplained = 0
    for r in rows:
        for name in r["survivors"]:
            ok = ".".join(name.split(".")[-2:]) in explained
            unexplained += not ok
            lines.append(f"- `{name}` ({r['target']}): {'explained in docs/testing.md' if ok else '**UNEXPLAINED**'}")
    if not any(r["survivors"] for r in rows):
        lines.append("none")
    lines += ["", f"Unexplained survivors: {unexplained}.", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run the named targets (all by default), print one summary line per target and record the results."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("targets", nargs="*", help="targets to run (default: all)")
    p.add_argument("--list", action="store_true", help="list the targets and exit")
    p.add_argument("--render", action="store_true", help="only re-render docs/results/mutation.md and exit")
    p.add_argument("--check", metavar="PATTERN", help="with one target: apply its mutants matching PATTERN, run tests")
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
