"""Fault and bad-input probes of ``normlight fit``, ``sweep`` and ``ui``, run the way a user (and an attacker) would.

Usage::

    .venv/bin/python benchmarks/probes.py                        # this checkout -> results/probes-after.json
    .venv/bin/python benchmarks/probes.py --source OLD --label before   # another checkout (git archive of it)
    .venv/bin/python benchmarks/probes.py -k P3,P21              # only probes whose id starts with P3 or P21

Every probe runs real ``python -m normlight`` commands (real Lightning, real sqlite stores, a real MLflow
server started with ``normlight ui``, real signals) in a fresh folder and judges one behaviour: **held** or
**failed**. Two counters are kept: **runs lost** (fits or grid points that should have ended with a finished
run and did not) and **duplicates** (metric points logged twice for one step, plus grid points finished more than
once). ``benchmarks/results/probes.md`` is rewritten from every ``probes-<label>.json`` present.

Bad-input probes hold when the command exits non-zero with exactly one ``error:`` line mentioning the thing at
fault, no traceback, no usage block, and no MLflow run. ``--source DIR`` puts DIR first on PYTHONPATH, so the
probes run that tree's ``normlight`` with this virtualenv.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
SECRET = "pr0be-S3cret"
MEASURED = ("diag/peak_mem_mb", "diag/tokens_per_sec")  # facts about the machine, not the training

# a GPT-nano fit on the bundled pydoc text that takes seconds (constant LR: runs of different length agree)
NANO = (
    "--model CausalLanguageModeling --model.model gpt-nano --model.norm rmsnorm --model.lr 3e-3 "
    "--model.warmup_steps 0 --model.min_lr_ratio 1.0 --model.sample_tokens 4 --data PydocTextDataModule "
    "--data.block_size 32 --data.batch_size 4 --trainer.limit_val_batches 1 --trainer.val_check_interval 2 "
    "--trainer.log_every_n_steps 1 --trainer.num_sanity_val_steps 0 --trainer.enable_progress_bar false "
    "--trainer.enable_model_summary false --trainer.accelerator cpu --trainer.devices 1 --diagnostics.every_n_steps 2"
).split()
CKPT_CB = "lightning.pytorch.callbacks.ModelCheckpoint"


@dataclass
class Result:
    id: str
    probe: str
    held: bool
    detail: str
    lost: int = 0
    duplicates: int = 0
    seconds: float = 0.0


PROBES: list = []


def probe(pid: str, text: str):
    """Register a probe function ``fn(ctx) -> (held, detail[, lost, duplicates])``."""

    def wrap(fn):
        PROBES.append((pid, text, fn))
        return fn

    return wrap


class Ctx:
    """The folder and environment of one probe, and helpers to run normlight in it."""

    def __init__(self, base: Path, source: str | None):
        self.dir = Path(tempfile.mkdtemp(dir=base))
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_TRACKING")}
        self.env.update(OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1")
        if source:
            self.env["PYTHONPATH"] = os.pathsep.join(p for p in (source, self.env.get("PYTHONPATH")) if p)
        self.uri = f"sqlite:///{self.dir / 'mlflow.db'}"
        self.root = Path(source).resolve() if source else ROOT  # its configs go with its code

    def cmd(self, *args) -> list[str]:
        return [sys.executable, "-m", "normlight", *map(str, args)]

    def run(self, *args, timeout=900, env=None) -> subprocess.CompletedProcess:
        return subprocess.run(
            self.cmd(*args),
            cwd=self.dir,
            env={**self.env, **(env or {})},
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def popen(self, *args, log="proc.log", env=None) -> subprocess.Popen:
        return subprocess.Popen(
            self.cmd(*args),
            cwd=self.dir,
            env={**self.env, **(env or {})},
            stdout=open(self.dir / log, "w"),
            stderr=subprocess.STDOUT,
        )

    def fit(self, *extra, uri=None, steps=4):
        return [
            "fit",
            *NANO,
            "--trainer.max_steps",
            steps,
            "--trainer.logger.init_args.tracking_uri",
            uri or self.uri,
            *extra,
        ]


def client(uri):
    from mlflow import MlflowClient

    return MlflowClient(uri)


def _sqlite_file(uri: str) -> Path | None:
    return Path(uri[len("sqlite:///") :]) if uri.startswith("sqlite:///") else None


def new_store(uri: str) -> None:
    """Create an empty store with this virtualenv's MLflow (the harness's set-up, not a probe of normlight)."""
    client(uri).search_experiments()


def all_runs(uri: str) -> list:
    db = _sqlite_file(uri)
    if db is not None and not db.exists():  # asking MLflow would create it, racing the process under test
        return []
    try:
        c = client(uri)
        exps = [e.experiment_id for e in c.search_experiments()]
        return c.search_runs(exps) if exps else []
    except Exception:  # noqa: BLE001 - no store yet
        return []


def history(uri: str, run_id: str, key: str) -> list:
    return sorted((m.step, m.value, m.timestamp) for m in client(uri).get_metric_history(run_id, key))


def duplicates(uri: str, run) -> int:
    """Metric points logged twice at one step (any key but the machine-dependent ones and 'epoch')."""
    n = 0
    for key in run.data.metrics:
        if key == "epoch" or key.startswith("summary/"):
            continue
        steps = [s for s, _, _ in history(uri, run.info.run_id, key)]
        n += len(steps) - len(set(steps))
    return n


def refused(p: subprocess.CompletedProcess, uri: str, *words: str) -> tuple[bool, str]:
    lines = [ln for ln in p.stderr.splitlines() if ln.startswith("error:")]
    problems = []
    if p.returncode == 0:
        problems.append("exit 0")
    if len(lines) != 1:
        problems.append(f"{len(lines)} error lines")
    elif not all(w in lines[0] for w in words):
        problems.append(f"error line does not name {words}")
    if "Traceback" in p.stderr:
        problems.append("traceback")
    if "usage:" in p.stderr + p.stdout:
        problems.append("usage block")
    if all_runs(uri):
        problems.append(f"{len(all_runs(uri))} run(s) recorded")
    first = lines[0][:150] if lines else (p.stderr.strip().splitlines() or ["(no output)"])[-1][:150]
    return not problems, "; ".join(problems) or first


def wait_for(cond, timeout: float, what: str, proc=None, poll: float = 0.5):
    deadline = time.time() + timeout
    while True:
        try:
            if cond():
                return
        except Exception:  # noqa: BLE001 - the store may not exist yet
            pass
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{what}: the process exited {proc.returncode} first")
        if time.time() > deadline:
            raise TimeoutError(what)
        time.sleep(poll)


def steps_logged(uri: str) -> int:
    """The most train/loss points any run of the store has (0 before the store or a run exists).

    A sqlite store is read read-only with sqlite3: polling it through MLflow while the process under test
    creates it would create (and race) the schema itself."""
    db = _sqlite_file(uri)
    if db is None:
        runs = all_runs(uri)
        return max((len(client(uri).get_metric_history(r.info.run_id, "train/loss")) for r in runs), default=0)
    if not db.exists():
        return 0
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
    try:
        q = "SELECT MAX(n) FROM (SELECT COUNT(*) AS n FROM metrics WHERE key = 'train/loss' GROUP BY run_uuid)"
        return con.execute(q).fetchone()[0] or 0
    except sqlite3.OperationalError:  # the schema is not there yet
        return 0
    finally:
        con.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """``normlight ui`` on a fixed port (so it can be stopped and started again at the same address)."""

    def __init__(self, ctx: Ctx, store: str, port: int | None = None):
        self.ctx, self.store, self.port = ctx, store, port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = None

    def start(self):
        db = _sqlite_file(self.store)
        if db is not None and not db.exists():  # `normlight ui` (rightly) refuses a store that does not exist
            new_store(self.store)
        self.proc = subprocess.Popen(
            self.ctx.cmd("ui", "--port", self.port, "--tracking-uri", self.store),
            cwd=self.ctx.dir,
            env=self.ctx.env,
            stdout=open(self.ctx.dir / f"ui-{time.time():.0f}.log", "w"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

        def up():
            with urllib.request.urlopen(f"{self.url}/health", timeout=2) as r:
                return r.status == 200

        wait_for(up, 240, "the MLflow server did not come up", self.proc)
        return self

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(timeout=120)


# ------------------------------------------------------------------------------------------------ bad input
def _bad(ctx, *extra_and_words):
    *extra, words = extra_and_words
    return refused(ctx.run(*ctx.fit(*extra, steps=2)), ctx.uri, *words)


@probe("P01", "fit: unknown config key")
def p01(ctx):
    return _bad(ctx, "--model.nrm", "rmsnorm", ("nrm",))


@probe("P02", "fit: unknown norm name")
def p02(ctx):
    return _bad(ctx, "--model.norm", "rmsnrm", ("rmsnrm",))


@probe("P03", "fit: unknown placement")
def p03(ctx):
    return _bad(ctx, "--model.placement", "prenorm", ("prenorm",))


@probe("P04", "fit: unknown model")
def p04(ctx):
    return _bad(ctx, "--model.model", "gpt-huge", ("gpt-huge",))


@probe("P05", "fit: option the norm plugin does not accept")
def p05(ctx):
    return _bad(ctx, "--model.norm_kwargs", "{foo: 1}", ("foo",))


@probe("P06", "fit: data and model disagree on the sequence length")
def p06(ctx):
    return _bad(ctx, "--data.block_size", "128", ("block_size",))


@probe("P07", "fit: text corpus path that matches nothing")
def p07(ctx):
    return _bad(ctx, "--data", "TextFilesDataModule", "--data.paths", "/nonexistent/corpus", ("/nonexistent",))


@probe("P08", "fit: option value of the wrong type")
def p08(ctx):
    return _bad(ctx, "--trainer.max_steps", "abc", ("max_steps",))


@probe("P09", "fit: --data.batch_size 0")
def p09(ctx):
    return _bad(ctx, "--data.batch_size", "0", ("batch_size",))


@probe("P10", "fit: negative learning rate")
def p10(ctx):
    return _bad(ctx, "--model.lr", "-1", ("lr",))


@probe("P11", "fit: empty text corpus")
def p11(ctx):
    (ctx.dir / "empty.txt").write_text("")
    return _bad(ctx, "--data", "TextFilesDataModule", "--data.paths", ctx.dir / "empty.txt", ("empty",))


@probe("P12", "fit: block larger than the corpus")
def p12(ctx):
    (ctx.dir / "tiny.txt").write_text("a short text " * 4)
    return _bad(ctx, "--data", "TextFilesDataModule", "--data.paths", ctx.dir / "tiny.txt", ("block_size",))


@probe("P13", "fit: val_check_interval larger than an epoch")
def p13(ctx):
    (ctx.dir / "story.txt").write_text("the norm keeps the residual stream stable. " * 40)
    return _bad(
        ctx,
        "--data",
        "TextFilesDataModule",
        "--data.paths",
        ctx.dir / "story.txt",
        "--data.block_size",
        "8",
        "--trainer.val_check_interval",
        "1000",
        ("val_check_interval",),
    )


@probe("P14", "fit: --ckpt_path to a missing file")
def p14(ctx):
    return _bad(ctx, "--ckpt_path", ctx.dir / "missing.ckpt", ("missing.ckpt",))


@probe("P15", "fit: --ckpt_path to a garbage file")
def p15(ctx):
    (ctx.dir / "garbage.ckpt").write_bytes(b"\x00not a checkpoint" * 20)
    return _bad(ctx, "--ckpt_path", ctx.dir / "garbage.ckpt", ("garbage.ckpt",))


@probe("P16", "fit: --ckpt_path to a truncated checkpoint")
def p16(ctx):
    import torch

    torch.save({"state_dict": {"w": torch.zeros(1000)}}, ctx.dir / "full.ckpt")
    data = (ctx.dir / "full.ckpt").read_bytes()
    (ctx.dir / "truncated.ckpt").write_bytes(data[: len(data) // 2])
    return _bad(ctx, "--ckpt_path", ctx.dir / "truncated.ckpt", ("truncated.ckpt",))


@probe("P17", "fit: checkpoint folder that cannot be written")
def p17(ctx):
    (ctx.dir / "a-file").write_text("not a folder")
    return _bad(ctx, "--trainer.default_root_dir", ctx.dir / "a-file" / "runs", ("a-file",))


# ------------------------------------------------------------------------------------------------ attacks
PAYLOAD = "class P:\n    def __reduce__(self):\n        return (exec, (\"open('PWNED', 'w').write('code ran')\",))\n"


def _crafted(path: Path, ctx: Ctx):
    """A checkpoint whose unpickling writes PWNED in the probe folder."""
    code = f"import torch\n{PAYLOAD}torch.save({{'state_dict': {{}}, 'x': P()}}, {str(path)!r})\n"
    subprocess.run([sys.executable, "-c", code], cwd=ctx.dir, check=True, env=ctx.env)


@probe("P18", "attack: crafted checkpoint given as --ckpt_path")
def p18(ctx):
    _crafted(ctx.dir / "crafted.ckpt", ctx)
    p = ctx.run(*ctx.fit("--ckpt_path", ctx.dir / "crafted.ckpt", steps=2))
    pwned = (ctx.dir / "PWNED").exists()
    return not pwned and p.returncode != 0, "code ran" if pwned else f"refused (exit {p.returncode})"


@probe("P19", "attack: crafted last.ckpt in the config's checkpoint folder, --ckpt_path last")
def p19(ctx):
    assert ctx.run(*ctx.fit()).returncode == 0
    (last,) = (ctx.dir / "runs" / "checkpoints").rglob("last.ckpt")
    _crafted(last, ctx)
    p = ctx.run(*ctx.fit("--ckpt_path", "last", steps=6))
    pwned = (ctx.dir / "PWNED").exists()
    return not pwned and p.returncode != 0, "code ran" if pwned else f"refused (exit {p.returncode})"


@probe("P20", "attack: crafted CIFAR-10 batch file")
def p20(ctx):
    d = ctx.dir / "cifar" / "cifar-10-batches-py"
    d.mkdir(parents=True)
    code = (
        "import pickle, numpy as np\n"
        + PAYLOAD
        + "for n in [f'data_batch_{i}' for i in range(1, 6)] + ['test_batch']:\n"
        "    pickle.dump({b'data': np.zeros((4, 3072), np.uint8), b'labels': [0, 1, 2, 3]}, open(f'"
        + str(d)
        + "/' + n, 'wb'))\n"
        "pickle.dump({b'data': P(), b'labels': [0]}, open('" + str(d) + "/data_batch_2', 'wb'))\n"
    )
    subprocess.run([sys.executable, "-c", code], cwd=ctx.dir, check=True, env=ctx.env)
    p = ctx.run(
        "fit",
        "--model",
        "ImageClassification",
        "--model.model",
        "resnet20",
        "--data",
        "CIFAR10DataModule",
        "--data.root",
        ctx.dir / "cifar",
        "--trainer.max_steps",
        "1",
        "--trainer.accelerator",
        "cpu",
        "--trainer.logger.init_args.tracking_uri",
        ctx.uri,
    )
    pwned = (ctx.dir / "PWNED").exists()
    return not pwned and p.returncode != 0, "code ran" if pwned else f"refused (exit {p.returncode})"


def _stored_text(ctx: Ctx) -> bytes:
    return b"".join(f.read_bytes() for f in ctx.dir.rglob("*") if f.is_file() and f.suffix != ".log")


@probe("P21", "no secret from the environment reaches the store")
def p21(ctx):
    p = ctx.run(*ctx.fit(), env={"AWS_SECRET_ACCESS_KEY": SECRET, "HF_TOKEN": SECRET})
    leaked = SECRET.encode() in _stored_text(ctx)
    return p.returncode == 0 and not leaked, "leaked into the store" if leaked else "not in the store"


def _credentials(ctx: Ctx) -> dict:
    """One server; a fit and a sweep given a tracking URI with user:password; where the password shows."""
    store = f"sqlite:///{ctx.dir / 'server.db'}"
    srv = Server(ctx, store).start()
    try:
        with_pw = srv.url.replace("http://", f"http://probe:{SECRET}@")
        fit = ctx.run(*ctx.fit("--trainer.logger.init_args.experiment_name", "creds", uri=with_pw))
        c = client(srv.url)
        runs = c.search_runs([c.get_experiment_by_name("creds").experiment_id])
        config = Path(c.download_artifacts(runs[0].info.run_id, "config.yaml", str(ctx.dir))).read_text()
        sweep = ctx.dir / "creds.yaml"
        sweep.write_text(
            json.dumps(
                {
                    "name": "creds",
                    "experiment": "creds-sweep",
                    "base": str(ctx.root / "configs" / "gpt" / "nano.yaml"),
                    "grid": {"model.lr": [0.001]},
                    "fixed": {
                        "trainer.max_steps": 2,
                        "trainer.val_check_interval": 2,
                        "trainer.limit_val_batches": 1,
                        "data.init_args.block_size": 32,
                        "data.init_args.batch_size": 4,
                    },
                }
            )
        )
        sw = ctx.run("sweep", sweep, "--tracking-uri", with_pw)
        logs = "".join(f.read_text() for f in (ctx.dir / "runs" / "sweeps").rglob("*.log"))
    finally:
        srv.stop()
    view = [ln for ln in fit.stdout.splitlines() if "View run" in ln]
    # normlight's own closing line(s) naming where the run is recorded (their wording changed over time)
    closing = [ln for ln in fit.stdout.splitlines() if ln.startswith("normlight:") and f":{srv.port}" in ln]
    return {"fit": fit, "config": config, "view": view, "closing": closing, "sweep": sw, "logs": logs}


_CRED_CACHE: dict = {}


def _cred(ctx, what):
    if "r" not in _CRED_CACHE:
        _CRED_CACHE["r"] = _credentials(ctx)
    return _CRED_CACHE["r"]


@probe("P22", "credentials in the tracking URI: config.yaml artifact")
def p22(ctx):
    r = _cred(ctx, "config")
    return SECRET not in r["config"], "password in config.yaml" if SECRET in r["config"] else "redacted"


@probe("P23", "credentials in the tracking URI: MLflow's 'View run at' line")
def p23(ctx):
    r = _cred(ctx, "view")
    bad = any(SECRET in ln for ln in r["view"])
    return bool(r["view"]) and not bad, "password printed" if bad else f"{len(r['view'])} line(s), clean"


@probe("P24", "credentials in the tracking URI: normlight's closing line")
def p24(ctx):
    r = _cred(ctx, "closing")
    bad = any(SECRET in ln for ln in r["closing"])
    return bool(r["closing"]) and not bad, "password printed" if bad else "clean"


@probe("P25", "credentials in the tracking URI: sweep output and child logs")
def p25(ctx):
    r = _cred(ctx, "sweep")
    bad = SECRET in r["logs"] or SECRET in r["sweep"].stdout + r["sweep"].stderr
    return r["sweep"].returncode == 0 and not bad, "password in a log" if bad else "clean"


@probe("P26", "ui: the server listens on 127.0.0.1 only")
def p26(ctx):
    srv = Server(ctx, ctx.uri).start()
    try:
        rows = [ln.split() for ln in Path("/proc/net/tcp").read_text().splitlines()[1:]]
        local = [r[1] for r in rows if r[3] == "0A" and int(r[1].split(":")[1], 16) == srv.port]
    finally:
        srv.stop()
    ok = bool(local) and all(a.startswith("0100007F") for a in local)
    return ok, f"listening on {local}"


# ------------------------------------------------------------------------------------------------ resume
def _ln_checkpoint(ctx, *extra) -> None:
    p = ctx.run(*ctx.fit("--model.norm", "layernorm", "--model.placement", "pre", *extra))
    assert p.returncode == 0, p.stderr[-2000:]


@probe("P27", "resume: --ckpt_path FILE of another model with conflicting flags")
def p27(ctx):
    _ln_checkpoint(ctx)
    (ckpt,) = (ctx.dir / "runs" / "checkpoints").rglob("last.ckpt")
    before = len(all_runs(ctx.uri))
    p = ctx.run(*ctx.fit("--model.placement", "peri", "--ckpt_path", ckpt, steps=6))
    err = [ln for ln in p.stderr.splitlines() if ln.startswith("error:")]
    ok = p.returncode != 0 and len(err) == 1 and "layernorm" in err[0] and "rmsnorm" in err[0]
    return ok and len(all_runs(ctx.uri)) == before, (err[0][:150] if err else f"exit {p.returncode}, trained")


@probe("P28", "resume: --ckpt_path last (fixed folder) of another model with conflicting flags")
def p28(ctx):
    cb = ["--trainer.callbacks", json.dumps([{"class_path": CKPT_CB, "init_args": {"dirpath": "fixed"}}])]
    _ln_checkpoint(ctx, *cb)
    p = ctx.run(*ctx.fit("--model.placement", "peri", *cb, "--ckpt_path", "last", steps=6))
    err = [ln for ln in p.stderr.splitlines() if ln.startswith("error:")]
    ok = p.returncode != 0 and len(err) == 1 and "layernorm" in err[0] and "rmsnorm" in err[0]
    return ok, (err[0][:150] if err else f"exit {p.returncode}, trained ({p.stderr.strip()[-120:]})")


@probe("P29", "resume: --ckpt_path last continues the same run")
def p29(ctx):
    assert ctx.run(*ctx.fit()).returncode == 0
    p = ctx.run(*ctx.fit("--ckpt_path", "last", steps=6))
    runs = all_runs(ctx.uri)
    steps = [s for s, _, _ in history(ctx.uri, runs[0].info.run_id, "train/loss")] if runs else []
    dup = duplicates(ctx.uri, runs[0]) if runs else 0
    ok = p.returncode == 0 and len(runs) == 1 and steps == list(range(6))
    return ok, f"{len(runs)} run(s), steps {steps}", 0 if ok else 1, dup


def _signal(ctx, sig, want_code):
    proc = ctx.popen(*ctx.fit(steps=100000))
    try:
        wait_for(lambda: steps_logged(ctx.uri) >= 3, 600, "training never started", proc)
        proc.send_signal(sig)
        proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            return False, "did not exit within 120 s"
    runs = all_runs(ctx.uri)
    status = runs[0].info.status if runs else "-"
    last = list((ctx.dir / "runs" / "checkpoints").rglob("last.ckpt"))
    ok = proc.returncode == want_code and status == "KILLED" and bool(last)
    return ok, f"exit {proc.returncode}, run {status}, last.ckpt {'written' if last else 'missing'}"


@probe("P30", "interrupt: SIGTERM during fit")
def p30(ctx):
    return _signal(ctx, signal.SIGTERM, 143)


@probe("P31", "interrupt: Ctrl-C (SIGINT) during fit")
def p31(ctx):
    return _signal(ctx, signal.SIGINT, 130)


@probe("P32", "SIGKILL during fit, then resume: no duplicate points, same batches as an uninterrupted run")
def p32(ctx):
    every5 = [
        "--trainer.callbacks",
        json.dumps([{"class_path": CKPT_CB, "init_args": {"every_n_train_steps": 5, "save_last": True}}]),
    ]
    ref_uri = f"sqlite:///{ctx.dir / 'ref.db'}"
    # 60 steps: the kill must land mid-run (a run that already ended would resume nothing and prove nothing)
    assert ctx.run(*ctx.fit(*every5, "--trainer.default_root_dir", "ref", uri=ref_uri, steps=60)).returncode == 0
    proc = ctx.popen(*ctx.fit(*every5, steps=60))
    try:
        wait_for(lambda: steps_logged(ctx.uri) >= 13, 600, "training never reached step 13", proc, poll=0.1)
    finally:
        proc.kill()
        proc.wait()
    killed_at = steps_logged(ctx.uri)
    if proc.returncode != -signal.SIGKILL or killed_at >= 60:
        return False, f"harness: the fit was not killed mid-run (exit {proc.returncode}, {killed_at} steps)", 0, 0
    p = ctx.run(*ctx.fit(*every5, "--ckpt_path", "last", steps=60))
    (ref,), runs = all_runs(ref_uri), all_runs(ctx.uri)
    if p.returncode != 0 or len(runs) != 1:
        return False, f"resume exit {p.returncode}, {len(runs)} runs", 1, 0
    dup = duplicates(ctx.uri, runs[0])
    differ = []
    for key in ref.data.metrics:
        if key == "epoch" or key.startswith("summary/") or key in MEASURED:
            continue
        want = {s: v for s, v, _ in history(ref_uri, ref.info.run_id, key)}
        got = {}
        for s, v, _ in history(ctx.uri, runs[0].info.run_id, key):
            got.setdefault(s, v)
        if set(want) != set(got) or any(abs(want[s] - got[s]) > 1e-5 * max(1.0, abs(want[s])) for s in want):
            differ.append(key)
    ok = dup == 0 and not differ
    detail = f"killed after {killed_at} steps; {dup} duplicate points; {len(differ)} keys differ from the uninterrupted run {differ[:3]}"
    return ok, detail, 0, dup


@probe("P33", "a diverging run (lr 1e30) is stopped and tagged, not crashed")
def p33(ctx):
    p = ctx.run(*ctx.fit("--model.lr", "1e30", steps=10))
    runs = all_runs(ctx.uri)
    tag = runs[0].data.tags.get("diverged") if runs else None
    return p.returncode == 0 and tag == "true", f"exit {p.returncode}, diverged={tag}"


@probe("P34", "four fits started at once on a NEW store")
def p34(ctx):
    procs = [ctx.popen(*ctx.fit("--seed_everything", seed), log=f"fit{seed}.log") for seed in range(4)]
    codes = [p.wait(timeout=1800) for p in procs]
    finished = [r for r in all_runs(ctx.uri) if r.info.status == "FINISHED"]
    lost = 4 - len(finished)
    return lost == 0, f"exit codes {codes}, {len(finished)} finished", lost, 0


@probe("P35", "fit against a server stopped for 45 s: training goes on, every point kept")
def p35(ctx):
    N = 400  # long enough to still be training when the server stops, even on a quiet machine (~20 s)
    store = f"sqlite:///{ctx.dir / 'server.db'}"
    srv = Server(ctx, store).start()
    proc = ctx.popen(*ctx.fit(uri=srv.url, steps=N))
    try:
        wait_for(lambda: steps_logged(srv.url) >= 3, 600, "training never started", proc)
        srv.stop()
        down = time.time() * 1000
        time.sleep(45)
        up = time.time() * 1000
        srv.start()
        code = proc.wait(timeout=1800)
        runs = all_runs(srv.url)
        points = history(srv.url, runs[0].info.run_id, "train/loss") if runs else []
        status = runs[0].info.status if runs else "-"
    finally:
        if proc.poll() is None:
            proc.kill()
        srv.stop()
    during = sum(1 for _, _, t in points if down < t < up)
    warnings = (ctx.dir / "proc.log").read_text().count("is not answering")
    steps = [s for s, _, _ in points]
    lost = 0 if code == 0 and status == "FINISHED" else 1
    ok = steps == list(range(N)) and status == "FINISHED" and during > 0 and warnings == 1
    return ok, f"{len(points)}/{N} points, {during} logged while down, {warnings} warning(s), run {status}", lost, 0


# ------------------------------------------------------------------------------------------------ sweeps
def _sweep_file(ctx, name, lrs, steps=3, checkpoint=False) -> Path:
    path = ctx.dir / f"{name}.yaml"
    fixed = {
        "trainer.max_steps": steps,
        "trainer.val_check_interval": min(steps, 5),
        "trainer.limit_val_batches": 1,
        "trainer.log_every_n_steps": 1,
        "data.init_args.block_size": 32,
        "data.init_args.batch_size": 4,
        "trainer.enable_checkpointing": checkpoint,
    }
    path.write_text(
        json.dumps(
            {
                "name": name,
                "experiment": name,
                "base": str(ctx.root / "configs" / "gpt" / "nano.yaml"),
                "grid": {"model.lr": lrs},
                "fixed": fixed,
            }
        )
    )
    return path


def _points(ctx, name) -> tuple[dict, list]:
    runs = [r for r in all_runs(ctx.uri) if r.data.tags.get("sweep") == name]
    by = {}
    for r in runs:
        by.setdefault(r.data.tags["sweep_hash"], []).append(r.info.status)
    return by, runs


@probe("P36", "two `normlight sweep` processes on the same sweep")
def p36(ctx):
    path = _sweep_file(ctx, "twice", [0.001, 0.003])
    new_store(ctx.uri)  # the new-store race is P34's; this probe is about two drivers on one sweep
    procs = [ctx.popen("sweep", path, "--tracking-uri", ctx.uri, log=f"sweep{i}.log") for i in range(2)]
    codes = [p.wait(timeout=1800) for p in procs]
    by, _ = _points(ctx, "twice")
    dup = sum(max(0, st.count("FINISHED") - 1) for st in by.values())
    lost = sum(1 for st in by.values() if "FINISHED" not in st) + (2 - len(by))
    return (
        dup == 0 and lost == 0 and codes == [0, 0],
        f"exit codes {codes}, FINISHED per point {[st.count('FINISHED') for st in by.values()]}",
        lost,
        dup,
    )


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except (FileNotFoundError, IndexError):
        return False


def _descendants(pid: int) -> list[int]:
    """Every live process below ``pid`` (read from /proc, so it does not depend on how normlight names them)."""
    parent = {}
    for d in Path("/proc").iterdir():
        try:
            if d.name.isdigit():
                parent[int(d.name)] = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            pass
    out, todo = [], [pid]
    while todo:
        pid = todo.pop()
        kids = [c for c, pp in parent.items() if pp == pid and _alive(c)]
        out += kids
        todo += kids
    return out


@probe("P37", "SIGKILL of the sweep driver, then the sweep again")
def p37(ctx):
    n = 300
    path = _sweep_file(ctx, "orphan", [0.001], steps=n)
    drv = ctx.popen("sweep", path, "--tracking-uri", ctx.uri, log="driver.log")
    wait_for(lambda: steps_logged(ctx.uri) >= 3, 900, "training never started", drv)
    children = _descendants(drv.pid)
    killed_at = steps_logged(ctx.uri)
    drv.kill()
    drv.wait()
    deadline = time.time() + 120
    while any(_alive(c) for c in children) and time.time() < deadline:
        time.sleep(0.5)
    orphans = [c for c in children if _alive(c)]
    # a child that kept training finishes the point on its own (or is still at it): that is the orphan
    (first,) = [r for r in all_runs(ctx.uri) if r.data.tags.get("sweep") == "orphan"]
    trained = len(client(ctx.uri).get_metric_history(first.info.run_id, "train/loss"))
    kept_training = bool(orphans) or first.info.status == "FINISHED"
    again = ctx.run("sweep", path, "--tracking-uri", ctx.uri, timeout=1800)
    for c in orphans:  # let an orphan finish as it would have
        while _alive(c):
            time.sleep(1)
    by, _ = _points(ctx, "orphan")
    finished = sum(st.count("FINISHED") for st in by.values())
    ok = bool(children) and not kept_training and finished == 1 and again.returncode == 0
    detail = (
        f"killed at step {killed_at}: its training {'kept going' if kept_training else 'stopped'} "
        f"({first.info.status} at {trained}/{n} steps, {len(orphans)} of {len(children)} child process(es) alive "
        f"after 120 s); statuses after the re-run {sorted(sum(by.values(), []))}"
    )
    return ok, detail, 0 if finished else 1, max(0, finished - 1)


@probe("P38", "SIGTERM to the sweep driver: the point ends KILLED and the next sweep re-runs it")
def p38(ctx):
    path = _sweep_file(ctx, "again", [0.001], steps=300)
    drv = ctx.popen("sweep", path, "--tracking-uri", ctx.uri, log="driver.log")
    wait_for(lambda: steps_logged(ctx.uri) >= 3, 900, "training never started", drv)
    drv.send_signal(signal.SIGTERM)
    code = drv.wait(timeout=300)
    first = sorted(sum(_points(ctx, "again")[0].values(), []))
    again = ctx.run("sweep", path, "--tracking-uri", ctx.uri, timeout=1800)
    by, _ = _points(ctx, "again")
    statuses = sorted(sum(by.values(), []))
    ok = first == ["KILLED"] and statuses == ["FINISHED", "KILLED"] and again.returncode == 0 and code == 143
    return (
        ok,
        f"driver exit {code}; after SIGTERM {first}; after the re-run {statuses}",
        0 if "FINISHED" in statuses else 1,
        0,
    )


@probe("P39", "sweep against a server stopped for 45 s: every point kept")
def p39(ctx):
    store = f"sqlite:///{ctx.dir / 'server.db'}"
    srv = Server(ctx, store).start()
    path = _sweep_file(ctx, "outage", [0.001, 0.003], steps=30)
    drv = ctx.popen("sweep", path, "--tracking-uri", srv.url, log="driver.log")
    try:
        wait_for(lambda: steps_logged(srv.url) >= 3, 900, "training never started", drv)
        srv.stop()
        time.sleep(45)
        srv.start()
        code = drv.wait(timeout=2400)
    finally:
        if drv.poll() is None:
            drv.kill()
    try:
        c = client(srv.url)
        runs = c.search_runs([c.get_experiment_by_name("outage").experiment_id])
        full = [
            r
            for r in runs
            if r.info.status == "FINISHED" and len(c.get_metric_history(r.info.run_id, "train/loss")) == 30
        ]
    finally:
        srv.stop()
    lost = 2 - len(full)
    return lost == 0 and code == 0, f"driver exit {code}; {len(full)}/2 points finished with all 30 steps", lost, 0


# ------------------------------------------------------------------------------------------------ main
def write_markdown() -> None:
    tables = {}
    for f in sorted(RESULTS.glob("probes-*.json")):
        tables[f.stem.split("-", 1)[1]] = json.loads(f.read_text())
    labels = sorted(tables, key=lambda k: (k != "before", k))
    lines = [
        "# Fault and bad-input probes",
        "",
        "Regenerate: `.venv/bin/python benchmarks/probes.py` "
        "(and `--source <checkout before issue 15> --label before`). Method: see the script's docstring.",
        "",
    ]
    for label in labels:
        t = tables[label]
        res = t["results"]
        held = sum(r["held"] for r in res)
        lines.append(
            f"- **{label}** ({t['source']}, {t['date']}): {held} held, {len(res) - held} failed of {len(res)}; "
            f"runs lost {sum(r['lost'] for r in res)}, duplicates {sum(r['duplicates'] for r in res)}"
        )
    lines += ["", "| id | probe | " + " | ".join(labels) + " |", "|---|---|" + "---|" * len(labels)]
    ids = sorted({r["id"] for t in tables.values() for r in t["results"]})
    for pid in ids:
        cells, text = [], ""
        for label in labels:
            r = next((r for r in tables[label]["results"] if r["id"] == pid), None)
            if r is None:
                cells.append("-")
                continue
            text = r["probe"]
            extra = (f", lost {r['lost']}" if r["lost"] else "") + (
                f", dup {r['duplicates']}" if r["duplicates"] else ""
            )
            cells.append(f"{'held' if r['held'] else '**failed**'}{extra}: {r['detail']}".replace("|", "/"))
        lines.append(f"| {pid} | {text} | " + " | ".join(cells) + " |")
    (RESULTS / "probes.md").write_text("\n".join(lines) + "\n")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--source", default=None, help="a normlight checkout to probe instead of this one")
    ap.add_argument("--label", default="after", help="results go to benchmarks/results/probes-<label>.json")
    ap.add_argument("-k", default="", help="only probes whose id starts with this (comma-separated: run in this order)")
    args = ap.parse_args()
    base = Path(tempfile.mkdtemp(prefix="normlight-probes-"))
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"probes-{args.label}.json"
    previous = json.loads(out.read_text())["results"] if args.k and out.exists() else []
    merged = {r["id"]: r for r in previous}
    results = []
    chosen = [p for k in args.k.split(",") for p in PROBES if p[0].startswith(k)]  # in the order of -k
    for pid, text, fn in dict.fromkeys(chosen):
        ctx = Ctx(base, args.source)
        t0 = time.time()
        try:
            got = fn(ctx)
        except Exception as exc:  # noqa: BLE001 - a probe that cannot complete is a failure, with its reason
            got = (False, f"{type(exc).__name__}: {str(exc)[:200]}")
        held, detail, *counts = got
        res = Result(pid, text, bool(held), detail, *counts, seconds=round(time.time() - t0, 1))
        results.append(res)
        print(f"{pid} {'held  ' if res.held else 'FAILED'} {text}: {detail}", flush=True)
        merged[pid] = asdict(res)  # saved after every probe: an interrupted run keeps what it measured
        table = {
            "label": args.label,
            "source": args.source or "this checkout",
            "date": datetime.date.today().isoformat(),
            "results": [merged[k] for k in sorted(merged)],
        }
        out.write_text(json.dumps(table, indent=1))
        write_markdown()
    shutil.rmtree(base, ignore_errors=True)
    held = sum(r.held for r in results)
    print(
        f"{held} held, {len(results) - held} failed; runs lost {sum(r.lost for r in results)}, "
        f"duplicates {sum(r.duplicates for r in results)}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
