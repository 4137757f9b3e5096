"""drift.py: PSI against hand-computed values, quantile bins, agreement and live performance."""

from __future__ import annotations

import math

import numpy as np
import pytest

from handoff_agent import drift


def test_psi_of_two_histograms_matches_the_formula_by_hand():
    # shares 0.5/0.5 against 0.8/0.2:
    # (0.8 - 0.5) ln(0.8 / 0.5) + (0.2 - 0.5) ln(0.2 / 0.5) = 0.3 * 0.470004 + 0.3 * 0.916291
    assert drift.psi([50, 50], [80, 20], eps=0) == pytest.approx(0.415888, abs=1e-6)
    # the default epsilon barely moves a histogram without empty bins
    assert drift.psi([50, 50], [80, 20]) == pytest.approx(0.415888, abs=1e-3)
    # PSI is symmetric, and zero for the same shares at any scale
    assert drift.psi([80, 20], [50, 50], eps=0) == pytest.approx(0.415888, abs=1e-6)
    assert drift.psi([10, 30, 60], [100, 300, 600]) == pytest.approx(0.0, abs=1e-12)


def test_an_empty_bin_costs_a_lot_but_stays_finite():
    # expected shares (1 + 1e-4, 1e-4) / (1 + 2e-4), actual 0.5/0.5:
    e = np.array([1 + 1e-4, 1e-4]) / (1 + 2e-4)
    by_hand = (0.5 - e[0]) * math.log(0.5 / e[0]) + (0.5 - e[1]) * math.log(0.5 / e[1])
    assert by_hand == pytest.approx(4.6043, abs=1e-4)
    assert drift.psi([100, 0], [50, 50]) == pytest.approx(by_hand, rel=1e-9)
    # nothing on one side: nothing to compare
    assert drift.psi([0, 0], [5, 5]) == 0.0
    with pytest.raises(ValueError, match="same bins"):
        drift.psi([1, 2], [1, 2, 3])


def test_class_psi_by_hand_and_unseen_classes():
    # 60/40 against 40/60: 2 * 0.2 * ln(0.6 / 0.4) = 0.162186
    assert drift.psi_classes({"a": 60, "b": 40}, ["a"] * 40 + ["b"] * 60) == pytest.approx(
        0.162186, abs=1e-3
    )
    assert drift.psi_classes(["a", "b"] * 10, {"a": 10, "b": 10}) == pytest.approx(0, abs=1e-9)
    # a class production never predicted is an empty reference bin: a large PSI
    assert drift.psi_classes({"a": 50, "b": 50}, {"a": 40, "b": 40, "c": 20}) > 1.0


def test_score_psi_bins_at_the_reference_quantiles():
    ref = np.arange(100.0)
    edges = drift.quantile_edges(ref, bins=4)
    assert list(edges) == [24.75, 49.5, 74.25]
    assert list(drift.histogram(ref, edges)) == [25, 25, 25, 25]
    assert drift.psi_scores(ref, ref, bins=4) == pytest.approx(0, abs=1e-12)
    # every current value in the first quartile: shares (1, 0, 0, 0) against 0.25 each,
    # with epsilon on the empty bins
    a = np.array([1 + 1e-4, 1e-4, 1e-4, 1e-4]) / (1 + 4e-4)
    e = np.full(4, 0.25)
    by_hand = float(np.sum((a - e) * np.log(a / e)))
    assert drift.psi_scores(ref, np.arange(20.0), bins=4) == pytest.approx(by_hand, rel=1e-9)
    # ties collapse bins, the tied value alone in one (so 1 moving to 2 shows); NaN is left out
    edges = drift.quantile_edges([1, 1, 1, 1, 2], bins=4)
    assert list(edges) == [1.0, np.nextafter(1.0, 2.0)]
    assert list(drift.histogram([1, 1, 1, 1, 2], edges)) == [0, 4, 1]
    assert drift.psi_scores([1.0] * 50, [2.0] * 50, bins=4) > 5  # a constant column moved
    assert list(drift.histogram([0.5, float("nan"), 3], np.array([1.0]))) == [1, 1]


def test_coarsen_groups_fine_bins_into_reference_quantiles():
    fine_ref = np.ones(100)  # uniform over 100 fine bins
    fine_cur = np.zeros(100)
    fine_cur[:50] = 2  # everything in the lower half
    e, a = drift.coarsen(fine_ref, fine_cur, bins=10)
    assert list(e) == [10] * 10
    assert list(a) == [20] * 5 + [0] * 5
    # the same PSI as binning the raw values at the reference's deciles
    assert drift.psi(e, a) == pytest.approx(drift.psi([1] * 10, [1] * 5 + [0] * 5))
    # leading and trailing empty reference bins join their neighbours
    ref = np.array([0, 0, 5, 5, 0, 0])
    cur = np.array([1, 0, 5, 5, 0, 1])
    e, a = drift.coarsen(ref, cur, bins=2)
    assert list(e) == [5, 5] and list(a) == [6, 6]


def test_psi_bands():
    assert [drift.psi_band(v) for v in (0.05, 0.1, 0.2, 0.3, None)] == [
        "none",
        "moderate",
        "moderate",
        "significant",
        None,
    ]


def test_class_agreement_and_live_metrics():
    assert drift.class_agreement([1, 0, 1, 1], [1, 1, 1, 0]) == 0.5
    assert drift.class_agreement([], []) is None
    with pytest.raises(ValueError, match="paired"):
        drift.class_agreement([1], [])
    assert drift.live_metric(["a", "b", "b", "a"], ["a", "b", "a", "a"]) == 0.75
    assert drift.live_metric([1.0, 2.0, 4.0], [1.0, 3.0, 1.0], "mae") == pytest.approx(4 / 3)
    assert drift.live_metric([1.0, 2.0, 4.0], [1.0, 3.0, 1.0], "rmse") == pytest.approx(
        math.sqrt(10 / 3)
    )
    assert drift.live_metric([], [], "mae") is None
    with pytest.raises(ValueError, match="Unknown live metric"):
        drift.live_metric([1], [1], "f1")


def test_live_ratio_is_below_one_when_worse_whatever_the_direction():
    assert drift.live_ratio(0.8, 0.9, "accuracy") == pytest.approx(0.8 / 0.9)
    assert drift.live_ratio(2.0, 1.0, "mae") == 0.5  # twice the error: half as good
    assert drift.live_ratio(0.5, 1.0, "rmse") == 2.0
    assert drift.live_ratio(0.0, 0.0, "accuracy") is None
    assert drift.live_ratio(0.0, 1.0, "mae") == math.inf
    assert drift.live_ratio(1.0, 0.0, "mae") == 0.0
    assert drift.live_ratio(None, 0.9, "accuracy") is None


def test_a_shortfall_counts_only_beyond_label_noise():
    # accuracy 0.70 (100 labels) against 0.90 (100): the line is 0.95 * 0.90 = 0.855, and
    # the gap 0.155 is 2.87 standard errors of sqrt(.7 * .3 / 100 + .95**2 * .9 * .1 / 100)
    se = math.sqrt(0.7 * 0.3 / 100 + 0.95**2 * 0.09 / 100)
    assert (0.855 - 0.7) / se == pytest.approx(2.87, abs=0.01)
    cand, base = (0.7, 0.7 * 0.3 / 100), (0.9, 0.9 * 0.1 / 100)
    assert drift.significantly_worse(cand, base, "accuracy", 0.95, z=2.33)
    assert not drift.significantly_worse(cand, base, "accuracy", 0.95, z=3.0)
    # 0.84 against 0.90 on 60 labels is below the line, but well within the noise
    cand, base = (0.84, 0.84 * 0.16 / 60), (0.9, 0.09 / 60)
    assert not drift.significantly_worse(cand, base, "accuracy", 0.95, z=2.33)
    # errors: lower is better; without spread any shortfall is real
    assert drift.significantly_worse((1.0, 0.0), (0.5, 0.0), "mae", 0.95, z=2.33)
    assert not drift.significantly_worse((0.5, 0.0), (0.5, 0.0), "mae", 0.95, z=2.33)
    # rmse compares mean squared errors: ratio 0.95 on roots is 0.9025 on squares
    assert drift.significantly_worse((1.0, 0.0), (0.9, 0.0), "rmse", 0.95, z=2.33)
    assert not drift.significantly_worse((1.0, 0.0), (0.91, 0.0), "rmse", 0.95, z=2.33)
