"""A study of this package's own norm, discovered by ``normlight study list`` through the ``normlight.studies``
entry point: BiasNorm (Zipformer) against LayerNorm in a Pre-norm byte-level GPT.

It reuses normlight's shipped GPT base config and verdict helpers; the grid, the rule and the analysis are this
package's. Run it like any study: ``normlight study run biasnorm_vs_layernorm --workers 2``.
"""

from __future__ import annotations

from importlib.resources import files

from normlight.studies import Analysis, RunRecord, Study, Table, Verdict
from normlight.studies.records import finals, pm, select
from normlight.studies.verdict import lower_is_better, mean_std

MIN_SEEDS = 2
TOLERANCE = 0.05  # nats: "as good as LayerNorm"
SCALES = {
    "smoke": dict(depth=2, steps=2, norms=["biasnorm"]),
    "cpu": dict(depth=4, steps=300, norms=["layernorm", "biasnorm"]),
    "gpu": dict(depth=12, steps=5000, norms=["layernorm", "biasnorm"]),
}


class BiasNormStudy(Study):
    """BiasNorm vs LayerNorm: final val loss of a Pre-norm GPT trained from scratch."""

    name = "biasnorm_vs_layernorm"
    title = "BiasNorm trains a Pre-norm GPT at least as well as LayerNorm"
    claim = (
        "we propose BiasNorm as a replacement of LayerNorm, which allows us to retain some length information in "
        "normalization"
    )
    paper = (
        "Yao et al. 2023, Zipformer: A faster and better encoder for automatic speech recognition (arXiv:2310.11230)"
    )
    rule = (
        f"Reproduced if BiasNorm's mean final val loss is within {TOLERANCE} nats of LayerNorm's or lower, unless "
        "LayerNorm is significantly lower (lower_is_better(LayerNorm, BiasNorm) reproduced) AND the gap exceeds the "
        f"tolerance, which is not reproduced; inconclusive with fewer than {MIN_SEEDS} seeds per norm."
    )
    key_metric = "val loss BiasNorm minus LayerNorm (nats)"

    def sweeps(self, scale, seeds):
        """norm {layernorm, biasnorm} x seed on normlight's GPT base config."""
        s = SCALES[scale]
        base = str(files("normlight.studies") / "configs" / "gpt_pydoc.yaml")
        fixed = {"model.model_kwargs": {"depth": s["depth"]}, "trainer.max_steps": s["steps"]}
        if scale == "smoke":
            fixed |= {"trainer.val_check_interval": 2, "trainer.limit_val_batches": 1, "diagnostics.every_n_steps": 1}
        return [
            {
                "name": "norms",
                "description": f"{s['depth']}-layer Pre-norm GPT, LayerNorm vs BiasNorm, {s['steps']} steps",
                "base": base,
                "grid": {"model.norm": s["norms"], "seed_everything": list(range(seeds))},
                "fixed": fixed,
            }
        ]

    def estimated_cpu_minutes(self, scale):
        """6 runs of a 4-layer GPT at cpu scale."""
        return {"smoke": 1, "cpu": 5, "gpu": 600}[scale]

    def analyze(self, runs: list[RunRecord], extra: dict, scale) -> Analysis:
        """Loss per norm and the verdict."""
        ln = finals(select(runs, model__norm="layernorm"), "val/loss")
        bn = finals(select(runs, model__norm="biasnorm"), "val/loss")
        table = Table("Final val loss (nats/byte)", ["norm", "val loss"], [["layernorm", pm(ln)], ["biasnorm", pm(bn)]])
        missing = [f"no {n} run" for n, v in (("layernorm", ln), ("biasnorm", bn)) if not v]
        return Analysis(decide(ln, bn, self.rule), [table], [], [], missing)


def decide(ln: list[float], bn: list[float], rule: str) -> Verdict:
    """Apply the rule to the per-seed final losses of LayerNorm and BiasNorm."""
    m_ln, _ = mean_std(ln)
    m_bn, _ = mean_std(bn)
    numbers = {
        "layernorm_val_loss": m_ln,
        "biasnorm_val_loss": m_bn,
        "val loss BiasNorm minus LayerNorm (nats)": m_bn - m_ln,
    }
    if min(len(ln), len(bn)) < MIN_SEEDS:
        return Verdict("inconclusive", rule, numbers, f"fewer than {MIN_SEEDS} seeds per norm")
    text = f"BiasNorm {m_bn:.3f} vs LayerNorm {m_ln:.3f} nats ({m_bn - m_ln:+.3f}, tolerance {TOLERANCE})"
    if m_bn - m_ln <= TOLERANCE:
        return Verdict("reproduced", rule, numbers, text)
    if lower_is_better(ln, bn) == "reproduced":
        return Verdict("not reproduced", rule, numbers, text)
    return Verdict("inconclusive", rule, numbers, text)


STUDY = BiasNormStudy()
