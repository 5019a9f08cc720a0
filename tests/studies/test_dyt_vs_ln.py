"""The DyT study's verdict on synthetic runs (every outcome) and its arms (the paper's alpha0 rules, auto)."""

from __future__ import annotations

import math

from normlight.studies.dyt_vs_ln import PAPER_GPT, STUDY
from tests.studies.fake_runs import run


def runs(gpt: dict, vit: dict, widths=(32, 96)) -> list:
    """``gpt`` / ``vit``: arm -> per-seed values (same at every width unless given as {width: values})."""
    out = []
    for fam, table, metric in (("gpt", gpt, "val/loss"), ("vit", vit, "val/acc1")):
        for arm, values in table.items():
            for w in widths:
                vals = values[w] if isinstance(values, dict) else values
                for s, v in enumerate(vals):
                    out.append(run(fam, {"setup": f"{arm}@{w}", "seed": s}, {metric: v}))
    return out


GPT_OK = {"ln": [2.0, 2.02], "dyt_paper": [2.01, 2.03], "dyt_auto": [2.0, 2.01]}
VIT_OK = {"ln": [0.80, 0.81], "dyt_paper": [0.80, 0.79], "dyt_auto": [0.81, 0.80]}


def test_reproduced_when_the_paper_arm_matches_everywhere():
    a = STUDY.analyze(runs(GPT_OK, VIT_OK), {}, "cpu")
    assert a.verdict.outcome == "reproduced" and not a.missing
    assert a.verdict.numbers["cells"] == 4 and a.verdict.numbers["dyt_paper_cells_matching"] == 4
    assert math.isclose(a.verdict.numbers["gpt_w32_dyt_paper_gap"], (2.02 - 2.01) / 2.01)


def test_not_reproduced_when_the_paper_arm_fails_one_cell():
    gpt = dict(GPT_OK, dyt_paper={32: [2.01, 2.03], 96: [2.8, 2.9]})
    a = STUDY.analyze(runs(gpt, VIT_OK), {}, "cpu")
    assert a.verdict.outcome == "not reproduced" and a.verdict.numbers["dyt_paper_cells_matching"] == 3
    assert "gpt w96 paper fails, auto matches" in a.verdict.reason


def test_inconclusive_when_a_gap_is_within_seed_noise_or_an_arm_is_missing():
    vit = dict(VIT_OK, dyt_paper=[0.70, 0.82])  # mean gap 0.045 > 0.02, but one seed beats LN
    assert STUDY.analyze(runs(GPT_OK, vit), {}, "cpu").verdict.outcome == "inconclusive"
    partial = STUDY.analyze(runs(GPT_OK, {k: v for k, v in VIT_OK.items() if k != "ln"}), {}, "cpu")
    assert partial.verdict.outcome == "inconclusive"
    assert "vit LayerNorm runs at width 32" in partial.missing


def test_auto_failing_does_not_change_the_verdict_on_the_paper_rule():
    a = STUDY.analyze(runs(dict(GPT_OK, dyt_auto=[3.0, 3.1]), VIT_OK), {}, "cpu")
    assert a.verdict.outcome == "reproduced" and a.verdict.numbers["dyt_auto_cells_matching"] == 2


def test_arms_follow_the_paper_and_the_default():
    gpt, vit = STUDY.sweeps("cpu", 2)
    setups = {s["label"]: s for s in gpt["grid"]["setup"]}
    assert setups["dyt_paper@96"]["model.norm_kwargs"] == PAPER_GPT
    assert PAPER_GPT["sites"] == {"attn_in": {"alpha_init": 0.8}} and PAPER_GPT["alpha_init"] == 0.2
    assert setups["dyt_paper@96"]["model.model_kwargs"]["emb_scale"] is True
    assert setups["dyt_auto@32"]["model.norm_kwargs"] == {"alpha_init": "auto"}
    vit_setups = {s["label"]: s for s in vit["grid"]["setup"]}
    assert vit_setups["dyt_paper@32"]["model.norm_kwargs"] == {"alpha_init": 0.5}
    assert vit_setups["ln@96"]["model.model_kwargs"]["dim"] == 96
