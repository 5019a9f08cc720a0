"""The study contract: a claim from a paper, the sweeps that test it, and a verdict rule fixed before running.

A study is discovered through the ``normlight.studies`` entry-point group (the entry point names a :class:`Study`
instance, conventionally the module attribute ``STUDY``). The runner (``normlight.studies.runner``) turns
:meth:`Study.sweeps` into ``normlight sweep`` runs, reads them back from MLflow as :class:`RunRecord` objects, calls
:meth:`Study.measure` for measurements made outside training, and hands both to :meth:`Study.analyze`, which
returns the tables, plots and the :class:`Verdict` that the report (``normlight.studies.report``) writes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Literal

if TYPE_CHECKING:  # matplotlib is imported only by the report, when it draws
    import matplotlib.axes

Scale = Literal["smoke", "cpu", "gpu"]
Outcome = Literal["reproduced", "not reproduced", "inconclusive"]
SCALES: tuple[str, ...] = ("smoke", "cpu", "gpu")
OUTCOMES: tuple[str, ...] = ("reproduced", "not reproduced", "inconclusive")


@dataclass(frozen=True)
class RunRecord:
    """One finished (or failed/diverged) training run of a study, as read back from MLflow."""

    run_id: str
    sweep: str  # the sweep's name (a study may have several sweeps)
    labels: dict[str, object]  # grid axis -> value for this point (as in the sweep file), plus "seed"
    overrides: dict[str, object]  # config key -> value actually passed to `normlight fit`
    status: str  # MLflow status: FINISHED / FAILED / KILLED / RUNNING
    diverged: bool  # normlight's diverged tag
    final: dict[str, float]  # last logged value of every metric (e.g. "val/loss", "val/acc", "train/loss")
    history: dict[str, list[tuple[int, float]]]  # metric -> [(step, value), ...] sorted by step
    params: dict[str, str]  # the run's MLflow params (e.g. effective norm options, step time)


@dataclass
class Verdict:
    """The outcome of applying a study's rule to its numbers, with the numbers and a one-sentence reason."""

    outcome: Outcome
    rule: str  # the study's rule text (Study.rule), copied
    numbers: dict[str, float]  # the numbers the rule was applied to (named)
    reason: str  # one sentence built from the numbers, e.g. "Pre-LN 1.2e-2 >= 3 x Post-LN 1e-3 in 3/3 seeds"


@dataclass
class Table:
    """A report table; cells are str, int, float (the report formats floats) or None (shown as "—")."""

    title: str
    columns: list[str]
    rows: list[list]


@dataclass
class Plot:
    """A report plot: ``draw`` draws on one matplotlib Axes; the report makes the figure and writes ``filename``."""

    filename: str  # e.g. "lr_sensitivity.png" (written under docs/studies/<study>/)
    title: str
    draw: Callable[["matplotlib.axes.Axes"], None]


@dataclass
class Analysis:
    """What :meth:`Study.analyze` returns: the verdict plus tables, plots, notes and what a partial result lacks."""

    verdict: Verdict
    tables: list[Table] = field(default_factory=list)
    plots: list[Plot] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # e.g. "Fashion-MNIST absent: digits used"; why scale may matter
    missing: list[str] = field(default_factory=list)  # what a partial result lacks (the report says so)


class Study:
    """Base class: a claim from a paper, the sweeps that test it, and a verdict rule fixed before running.

    Subclass it, set the class attributes, implement :meth:`analyze` (and :meth:`sweeps` / :meth:`measure` as the
    study needs), and register an instance under ``[project.entry-points."normlight.studies"]``.
    """

    name: str = ""  # "e2_warmup" (= the entry-point name)
    title: str = ""  # "Post-LN needs warm-up, Pre-LN does not"
    claim: str = ""  # quoted from the paper
    paper: str = ""  # "Xiong et al. 2020, On Layer Normalization in the Transformer Architecture (arXiv:2002.04745)"
    rule: str = ""  # the verdict rule in words, fixed in code before any run
    key_metric: str = ""  # what the README table shows, e.g. "max stable LR ratio Pre/Post"
    # seeds per scale when `normlight study run` gets no --seeds (a study with a large grid may use fewer)
    default_seeds: dict = {"smoke": 1, "cpu": 3, "gpu": 3}

    def sweeps(self, scale: Scale, seeds: int) -> list[dict]:
        """Zero or more sweep specs in the sweep-file schema of normlight/sweep/spec.py.

        Each is ``{name, experiment, base, grid, fixed, description}``; ``base`` is a path to a config YAML
        (absolute, or relative to the directory of the study's module: a study ships its base configs as package
        data next to its module, e.g. normlight/studies/configs/*.yaml, so an installed package works). Seeds are a
        grid axis ``seed_everything: [0, 1, 2]`` (the first ``seeds`` seeds). Default: no sweeps.
        """
        return []

    def measure(self, scale: Scale, seeds: int, runs: list[RunRecord]) -> dict:
        """Measurements outside training (init-time forward passes over depth, converting a trained model, timing).

        Returns JSON-able numbers; the runner stores them as a JSON artifact of the study run and passes them to
        :meth:`analyze`. Default: ``{}``.
        """
        return {}

    def analyze(self, runs: list[RunRecord], extra: dict, scale: Scale) -> Analysis:
        """Tables, plots and the verdict, computed ONLY from ``runs`` + ``extra`` by applying ``self.rule``.

        Must work on partial results: fill :attr:`Analysis.missing` and return outcome ``"inconclusive"`` when
        data is lacking.
        """
        raise NotImplementedError(f"study {self.name!r} does not implement analyze()")

    def estimated_cpu_minutes(self, scale: Scale) -> float:
        """Wall minutes on 2 CPU cores with ``--workers 2`` (``normlight study list`` shows it); nan if unknown."""
        return float("nan")
