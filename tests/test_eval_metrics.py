"""Accuracy, RCA, PNLG and their bootstrap intervals against hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest

from yapo import YapoError
from yapo.evaluate.bootstrap import percentile_interval
from yapo.evaluate.metrics import EPS, MetricsSummary, PairScore, pnlg, rca, summarize

NAN = float("nan")


def test_rca_and_pnlg_of_one_pair_by_hand() -> None:
    # p_loc = 0.8, p_non = 0.4: harmonic mean 2·0.32/1.2, gap 0.4 over the mean 0.6.
    assert rca([0.8], [0.4]) == pytest.approx(0.64 / 1.2, rel=1e-5)
    assert pnlg([0.8], [0.4]) == pytest.approx(0.4 / 0.6, rel=1e-5)
    assert pnlg([0.8], [0.4], alpha=0.0) == pytest.approx(0.4, rel=1e-5)
    assert pnlg([0.8], [0.4], alpha=0.5) == pytest.approx(0.4 / math.sqrt(0.6), rel=1e-5)
    # Expectations are plain means over pairs; a gap the other way is negative.
    assert rca([0.8, 1.0], [0.4, 1.0]) == pytest.approx((0.64 / 1.2 + 1.0) / 2, rel=1e-5)
    assert pnlg([0.2], [0.6]) == pytest.approx(-0.4 / 0.4, rel=1e-5)
    # Both zero: ε keeps it finite (RCA 0, PNLG 0); pairs with a NaN are skipped.
    assert rca([0.0], [0.0]) == 0.0 and pnlg([0.0], [0.0]) == 0.0
    assert rca([0.8, NAN], [0.4, 0.5]) == pytest.approx(0.64 / 1.2, rel=1e-5)
    with pytest.raises(YapoError, match="alpha"):
        pnlg([0.5], [0.5], alpha=1.5)


def _pairs() -> list[PairScore]:
    """Spain (es): loc 1,1,1,0 / non 1,0,0,0; Mexico (es): all right; Egypt (ar): 0,0,1 / 0,1,1."""
    rows = [
        ("es", "Spain", [(1, 1), (1, 0), (1, 0), (0, 0)]),
        ("es", "Mexico", [(1, 1), (1, 1)]),
        ("ar", "Egypt", [(0, 0), (0, 1), (1, 1)]),
    ]
    return [
        PairScore(f"{country}-{i}", country, language, float(loc), float(non))
        for language, country, items in rows
        for i, (loc, non) in enumerate(items)
    ]


# Hand-computed per-country values (unit = country):
SPAIN = {"localized": 0.75, "nonlocalized": 0.25, "mixed": 0.5, "rca": 0.375, "pnlg": 1.0}
MEXICO = {"localized": 1.0, "nonlocalized": 1.0, "mixed": 1.0, "rca": 1.0, "pnlg": 0.0}
EGYPT = {
    "localized": 1 / 3,
    "nonlocalized": 2 / 3,
    "mixed": 0.5,
    "rca": 4 / 9,
    "pnlg": -2 / 3,
}


def _value(summary: MetricsSummary, level: str, name: str | None, metric: str) -> float:
    return summary.get(level, name).metrics[metric].value


def test_country_language_overall_by_hand() -> None:
    summary = summarize(_pairs(), samples=0)
    for country, expected in [("Spain", SPAIN), ("Mexico", MEXICO), ("Egypt", EGYPT)]:
        for metric, value in expected.items():
            assert _value(summary, "country", country, metric) == pytest.approx(value, abs=1e-5)
    for metric in SPAIN:
        spanish = (SPAIN[metric] + MEXICO[metric]) / 2
        assert _value(summary, "language", "es", metric) == pytest.approx(spanish, abs=1e-5)
        overall = (SPAIN[metric] + MEXICO[metric] + EGYPT[metric]) / 3
        assert _value(summary, "overall", None, metric) == pytest.approx(overall, abs=1e-5)
    assert summary.get("language", "es").n_items == 6
    assert summary.get("language", "es").n_countries == 2
    assert summary.overall.n_items == 9 and summary.overall.n_countries == 3
    assert [r.level for r in summary.rows] == ["country"] * 3 + ["language"] * 2 + ["overall"]
    assert math.isnan(summary.overall.metrics["rca"].low)  # no bootstrap, no interval


def test_item_unit_by_hand() -> None:
    summary = summarize(_pairs(), unit="item", samples=0)
    # Spain: RCA terms 1, 0, 0, 0; PNLG terms 0, 1/0.5, 1/0.5, 0.
    assert _value(summary, "country", "Spain", "rca") == pytest.approx(0.25, abs=1e-5)
    assert _value(summary, "country", "Spain", "pnlg") == pytest.approx(1.0, abs=1e-5)
    # Egypt: RCA terms 0, 0, 1; PNLG terms 0, -2, 0.
    assert _value(summary, "country", "Egypt", "rca") == pytest.approx(1 / 3, abs=1e-5)
    assert _value(summary, "country", "Egypt", "pnlg") == pytest.approx(-2 / 3, abs=1e-5)
    # Accuracies do not depend on the unit.
    assert _value(summary, "country", "Spain", "localized") == 0.75


def test_missing_scores_are_skipped_not_counted_as_zero() -> None:
    pairs = [
        PairScore("a", "Spain", "es", 1.0, NAN),
        PairScore("b", "Spain", "es", 0.0, 1.0),
        PairScore("c", "Spain", "es", NAN, NAN),
    ]
    summary = summarize(pairs, samples=0)
    row = summary.get("country", "Spain").metrics
    assert row["localized"].value == pytest.approx(0.5)
    assert row["nonlocalized"].value == pytest.approx(1.0)
    assert row["mixed"].value == pytest.approx(2 / 3)
    item = summarize(pairs, unit="item", samples=0).get("country", "Spain").metrics
    assert item["rca"].value == pytest.approx(0.0, abs=1e-5)  # only pair b is complete
    assert item["pnlg"].value == pytest.approx(-1.0 / (0.5 + EPS), abs=1e-5)


def test_bootstrap_matches_a_naive_resampling_loop() -> None:
    pairs = [p for p in _pairs() if p.country == "Spain"]
    samples, seed = 300, 7
    summary = summarize(pairs, samples=samples, seed=seed)
    rng = np.random.default_rng(seed)
    loc = np.array([p.localized for p in pairs])
    non = np.array([p.nonlocalized for p in pairs])
    accuracy, gaps = [], []
    for row in rng.integers(0, len(pairs), size=(samples, len(pairs))):
        p, q = loc[row].mean(), non[row].mean()
        accuracy.append(p)
        gaps.append((p - q) / ((p + q) / 2 + EPS))
    for metric, replicates in [("localized", accuracy), ("pnlg", gaps)]:
        interval = summary.overall.metrics[metric]
        low, high = np.quantile(replicates, [0.025, 0.975])
        assert interval.low == pytest.approx(low, abs=1e-9)
        assert interval.high == pytest.approx(high, abs=1e-9)
        assert interval.low <= interval.value <= interval.high


def test_bootstrap_is_seeded_and_collapses_without_variance() -> None:
    first = summarize(_pairs(), samples=200, seed=1).to_json()
    assert summarize(_pairs(), samples=200, seed=1).to_json() == first
    assert summarize(_pairs(), samples=200, seed=2).to_json() != first
    same = [PairScore(str(i), "Spain", "es", 1.0, 0.0) for i in range(5)]
    interval = summarize(same, samples=100).overall.metrics["localized"]
    assert (interval.low, interval.value, interval.high) == (1.0, 1.0, 1.0)
    narrow = summarize([PairScore(str(i), "X", "x", float(i % 2), 0.0) for i in range(400)])
    wide = summarize([PairScore(str(i), "X", "x", float(i % 2), 0.0) for i in range(20)])

    def width(s: MetricsSummary) -> float:
        m = s.overall.metrics["localized"]
        return m.high - m.low

    assert width(narrow) < width(wide)


def test_summary_round_trips_through_json() -> None:
    summary = summarize(_pairs(), samples=50)
    again = MetricsSummary.from_json(summary.to_json())
    assert again.to_json() == summary.to_json()


def test_percentile_interval_ignores_nan_replicates() -> None:
    interval = percentile_interval(0.5, np.array([NAN, 0.4, 0.6, NAN]), 0.5)
    assert interval.low == pytest.approx(0.45) and interval.high == pytest.approx(0.55)
    empty = percentile_interval(0.5, np.array([NAN]))
    assert math.isnan(empty.low) and empty.value == 0.5


def test_bad_settings_raise() -> None:
    with pytest.raises(YapoError, match="no scored items"):
        summarize([])
    with pytest.raises(YapoError, match="unit"):
        summarize(_pairs(), unit="sentence")  # type: ignore[arg-type]
    with pytest.raises(YapoError, match="alpha"):
        summarize(_pairs(), alpha=-0.1)
    with pytest.raises(YapoError, match="confidence"):
        summarize(_pairs(), confidence=95)
    with pytest.raises(YapoError, match="bootstrap"):
        summarize(_pairs(), samples=-1)
