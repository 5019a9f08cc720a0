"""Loss-spike detector (robust z-score) and divergence guard against numpy / synthetic series."""

import numpy as np
import pytest

from normlight.diagnostics import loss_spikes

# ---------------------------------------------------------------- loss spikes


def test_robust_zscore_matches_numpy():
    rng = np.random.default_rng(0)
    hist = list(rng.normal(2.0, 0.1, size=50))
    med = np.median(hist)
    mad = np.median(np.abs(np.asarray(hist) - med))
    assert loss_spikes.robust_zscore(hist, 3.0) == pytest.approx((3.0 - med) / (1.4826 * mad))


def test_spike_detector_on_synthetic_series():
    rng = np.random.default_rng(1)
    series = list(2.0 - 0.001 * np.arange(200) + rng.normal(0, 0.02, 200))
    spikes_at = {60, 120, 121, 180}
    for i in spikes_at:
        series[i] += 1.0  # about 50 robust standard deviations
    det = loss_spikes.SpikeDetector(window=50, threshold=6.0)
    flagged = {i for i, v in enumerate(series) if det.update(v)}
    assert flagged == spikes_at
    assert det.count == 4


def test_spike_detector_needs_history_and_ignores_drops():
    det = loss_spikes.SpikeDetector(window=10, threshold=3.0, min_history=5)
    assert not any(det.update(v) for v in [1.0, 50.0, 1.0, 1.0])  # too little history to judge
    det2 = loss_spikes.SpikeDetector(window=10, threshold=3.0, min_history=3)
    for v in [1.0, 1.1, 0.9, 1.0, 1.05]:
        det2.update(v)
    assert not det2.update(-100.0)  # a sudden drop is not a spike


def test_divergence_guard_records_first_step_only():
    g = loss_spikes.DivergenceGuard()
    assert not g.check(1.0, 3, "loss")
    assert g.check(float("inf"), 7, "loss")
    assert not g.check(float("nan"), 9, "gradient norm")
    assert (g.diverged, g.step) == (True, 7) and "loss" in g.reason


@pytest.mark.parametrize("threshold,flagged", [(3.0, True), (6.0, False)])
def test_spike_threshold_is_the_one_given(threshold, flagged):
    """A loss at robust z of about 4 is a spike at threshold 3 and not at 6."""
    hist = [1.0 + 0.01 * d for d in (-2, -1, -1, 0, 0, 0, 1, 1, 2, -2, 2, 0)]
    med = np.median(hist)
    mad = np.median(np.abs(np.asarray(hist) - med))
    value = float(med + 4.0 * 1.4826 * mad)  # z = 4 by the numpy formula
    det = loss_spikes.SpikeDetector(window=20, threshold=threshold, min_history=len(hist))
    assert not any(det.update(v) for v in hist)
    assert det.update(value) is flagged
    assert det.last_z == pytest.approx(4.0)
    assert det.count == int(flagged)
