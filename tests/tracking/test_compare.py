"""Pure parts of `normlight compare`: maximum stable LR and field lookup."""

from types import SimpleNamespace

from normlight.tracking import compare


def test_max_stable_lr_rules():
    nan = float("nan")
    pts = [
        (1e-3, False, 2.0),
        (1e-3, False, 2.2),
        (1e-2, False, 2.05),
        (1e-2, False, 2.05),
        (3e-2, False, 2.5),
        (1e-1, True, nan),
    ]
    assert compare.max_stable_lr(pts) == 1e-2  # 3e-2 is 19% worse than the best mean (2.05 at 1e-2)
    assert compare.max_stable_lr(pts, tolerance=0.3) == 3e-2
    pts.append((3e-2, True, nan))  # one diverged seed makes an LR unstable whatever the others did
    assert compare.max_stable_lr(pts, tolerance=0.3) == 1e-2
    acc = [(0.01, False, 0.9), (0.1, False, 0.85), (1.0, False, 0.5)]
    assert compare.max_stable_lr(acc, maximize=True) == 0.1
    assert compare.max_stable_lr([(0.1, True, nan)]) is None


def test_field_value_lookup_order():
    run = SimpleNamespace(
        data=SimpleNamespace(
            tags={"norm": "rmsnorm", "cfg.model.lr": "0.01", "norm_setup": "gn+ws"},
            params={"model.lr": "0.003", "data.batch_size": "8", "seed_everything": "1"},
        )
    )
    assert compare.field_value(run, "norm") == "rmsnorm"  # a tag
    assert compare.field_value(run, "seed_everything") == "1"  # a param
    assert compare.field_value(run, "lr") == "0.003"  # dotted param beats the cfg. tag
    assert compare.field_value(run, "batch_size") == "8"
    assert compare.field_value(run, "norm_setup") == "gn+ws"
    assert compare.field_value(run, "missing") is None
