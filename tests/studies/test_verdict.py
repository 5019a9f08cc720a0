"""normlight.studies.verdict on synthetic numbers: every helper, every outcome, the edge cases (n = 0, 1)."""

import math

import pytest
from scipy import stats

from normlight.studies.verdict import lower_is_better, max_stable, mean_std, ranges_separate, welch


def test_mean_std_is_the_sample_std():
    m, s = mean_std([1.0, 2.0, 3.0, 6.0])
    assert m == pytest.approx(3.0)
    assert s == pytest.approx(math.sqrt(((2**2) + 1 + 0 + 9) / 3))  # n-1 in the denominator
    assert mean_std([4.0]) == (4.0, 0.0)
    m0, s0 = mean_std([])
    assert math.isnan(m0) and math.isnan(s0)


def test_welch_matches_an_independent_formula():
    a, b = [1.0, 1.2, 0.9, 1.1], [1.5, 1.9, 1.7]
    t, p = welch(a, b)
    va, vb = (mean_std(a)[1] ** 2 / len(a)), (mean_std(b)[1] ** 2 / len(b))
    t_ref = (mean_std(a)[0] - mean_std(b)[0]) / math.sqrt(va + vb)
    dof = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))  # Welch-Satterthwaite
    p_ref = 2 * stats.t.sf(abs(t_ref), dof)
    assert t == pytest.approx(t_ref) and p == pytest.approx(p_ref)
    assert all(math.isnan(x) for x in welch([1.0], [1.0, 2.0]))
    assert all(math.isnan(x) for x in welch([], []))


def test_ranges_separate():
    assert ranges_separate([1, 2], [3, 4]) and ranges_separate([3, 4], [1, 2])
    assert not ranges_separate([1, 3], [2, 4])
    assert not ranges_separate([1, 2], [2, 3])  # touching ranges overlap
    assert not ranges_separate([], [1])


@pytest.mark.parametrize(
    "a, b, expected",
    [
        ([1.0, 1.1, 1.2], [2.0, 2.1, 2.2], "reproduced"),  # lower and separated
        ([2.0, 2.1, 2.2], [1.0, 1.1, 1.2], "not reproduced"),  # higher and separated
        ([1.0, 2.0, 3.0], [1.1, 2.1, 3.1], "inconclusive"),  # overlapping, not significant
        ([], [1.0, 2.0], "inconclusive"),  # no data
        ([1.0], [2.0], "reproduced"),  # one seed each: separate ranges decide
        (
            [1.00, 1.02, 1.04, 1.06, 1.08, 1.2],
            [1.3, 1.32, 1.34, 1.36, 1.38, 1.1],
            "reproduced",
        ),  # overlap, but p < 0.05
    ],
)
def test_lower_is_better_every_outcome(a, b, expected):
    assert lower_is_better(a, b) == expected


def test_lower_is_better_significance_case_really_overlaps():
    a, b = [1.00, 1.02, 1.04, 1.06, 1.08, 1.2], [1.3, 1.32, 1.34, 1.36, 1.38, 1.1]
    assert not ranges_separate(a, b) and welch(a, b)[1] < 0.05
    assert lower_is_better(a, b, alpha=welch(a, b)[1] / 2) == "inconclusive"  # a stricter alpha decides otherwise


def test_max_stable():
    assert max_stable({1e-3: [True, True], 3e-3: [True, False], 1e-2: [False]}) == 1e-3
    assert max_stable({1e-3: [True], 3e-3: [True]}) == 3e-3
    assert max_stable({1e-3: [False]}) is None
    assert max_stable({1e-3: [True], 1e-2: []}) == 1e-3  # an LR without runs is not evidence of stability
    assert max_stable({}) is None
