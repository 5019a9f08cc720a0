"""E6's verdict on synthetic runs and depth curves (every outcome), and the init-scale measurement itself."""

from __future__ import annotations

import math

import torch

from normlight.studies.e06_fixup_nf import ARMS, STUDY, _growth, init_scale
from tests.studies.fake_runs import run

DEPTHS = [8, 56, 998]


def extra(no_norm_last=None, fixup_last=0.2, nf_last=0.1) -> dict:
    def curve(first, last):
        return [{"out_std": first, "grad_scale": 1.0}, {"out_std": first, "grad_scale": 1.0}, {"out_std": last}]

    return {
        "depths": DEPTHS,
        "scale": {
            "bn": curve(0.8, 8.0),
            "no_norm": curve(0.4, no_norm_last),
            "fixup": curve(0.23, fixup_last),
            "nf": curve(0.15, nf_last),
        },
    }


def runs(acc: dict, diverged: tuple = ()) -> list:
    return [
        run("train", {"arm": arm, "seed": s}, {"val/acc1": v}, diverged=(arm, s) in diverged)
        for arm, values in acc.items()
        for s, v in enumerate(values)
    ]


GOOD = {"bn": [0.85, 0.86, 0.84], "no_norm": [0.3, 0.5, 0.6], "fixup": [0.84, 0.85, 0.83], "nf": [0.86, 0.85, 0.87]}


def test_reproduced_and_overflow_counts_as_growth():
    a = STUDY.analyze(runs(GOOD), extra(), "cpu")
    assert a.verdict.outcome == "reproduced" and not a.missing
    assert math.isinf(a.verdict.numbers["init_growth_no_norm"])
    assert math.isclose(a.verdict.numbers["init_growth_nf"], 0.1 / 0.15)


def test_not_reproduced_when_fixup_scale_grows_or_fixup_trails_bn_in_every_seed():
    assert STUDY.analyze(runs(GOOD), extra(fixup_last=5.0), "cpu").verdict.outcome == "not reproduced"
    assert STUDY.analyze(runs(GOOD), extra(nf_last=0.001), "cpu").verdict.outcome == "not reproduced"  # 150x shrink
    bad = dict(GOOD, fixup=[0.6, 0.62, 0.61])
    a = STUDY.analyze(runs(bad), extra(), "cpu")
    assert a.verdict.outcome == "not reproduced" and "(b) not reproduced" in a.verdict.reason


def test_not_reproduced_when_no_norm_trains_fine():
    a = STUDY.analyze(runs(dict(GOOD, no_norm=[0.84, 0.85, 0.86])), extra(), "cpu")
    assert "(c) not reproduced" in a.verdict.reason and a.verdict.outcome == "not reproduced"


def test_inconclusive_on_mixed_seeds_and_missing_measurement():
    mixed = dict(GOOD, no_norm=[0.3, 0.85, 0.4])
    assert STUDY.analyze(runs(mixed), extra(), "cpu").verdict.outcome == "inconclusive"
    a = STUDY.analyze(runs(GOOD), {}, "cpu")
    assert a.verdict.outcome == "inconclusive" and "the init-scale measurement (measure())" in a.missing


def test_diverged_no_norm_scores_chance():
    a = STUDY.analyze(runs(dict(GOOD, no_norm=[0.9, 0.1, 0.1]), diverged={("no_norm", 0)}), extra(), "cpu")
    assert math.isclose(a.verdict.numbers["acc_no_norm"], 0.1)


def test_growth_ratio():
    assert _growth([2.0, 4.0, 8.0]) == 4.0 and math.isinf(_growth([1.0, None])) and math.isnan(_growth([1.0]))


def test_init_scale_matches_a_direct_forward():
    # Fixup's branches output exactly 0 at init, so depth does not change the output of a stage; the std
    # equals the one computed by hand from the same fresh model and input.
    from normlight.models.resnet import cifar_resnet

    got = init_scale("fixup", 14, 0.25, 8)
    torch.manual_seed(0)
    model = cifar_resnet(14, width=0.25, img_size=8, in_chans=1, variant="fixup").train()
    x = torch.randn(8, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    assert math.isclose(got["out_std"], float(model.forward_features(x).detach().std()), rel_tol=1e-6)
    assert init_scale("no_norm", 8, 0.25, 8)["out_std"] is not None and set(ARMS) == {"bn", "no_norm", "fixup", "nf"}


def test_a_dead_network_and_the_bn_gradient_growth_are_noted():
    a = STUDY.analyze(runs(dict(GOOD, fixup=[0.1, 0.11, 0.1])), extra(), "cpu")
    assert any(n.startswith("fixup ended at chance level") for n in a.notes)
    assert not any(n.startswith("bn ended") for n in a.notes)
    b = STUDY.analyze(
        runs(GOOD),
        {
            "depths": [8, 998],
            "scale": {"bn": [{"out_std": 1.0, "grad_scale": 2.0}, {"out_std": 8.0, "grad_scale": 2000.0}]},
        },
        "cpu",
    )
    assert any("input-gradient scale grows x1e+03" in n for n in b.notes)
