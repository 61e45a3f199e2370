"""Accuracy, RCA and PNLG over localized/non-localized pairs, per country, language, overall.

Definitions (docs/design.md, "Evaluation metrics"), for scores ``p_loc, p_non`` in [0, 1] and
``p̄ = (p_loc + p_non) / 2``:

* ``RCA    = E[ 2·p_loc·p_non / (p_loc + p_non + ε) ]``  (higher is better: both high)
* ``PNLG_α = E[ (p_loc − p_non) / (p̄^α + ε) ]``        (lower is better: small gap)

What a "pair" is — the choice this module makes, and the option it offers:

* ``unit="country"`` (default, the paper's reading for MCQ): ``p_loc`` and ``p_non``
  are a country's mean score over its items in each setting (its accuracy for MCQ,
  its mean judge score / 10 for open-ended answers); RCA and PNLG are computed once per
  country, and E is the mean over countries.
* ``unit="item"``: ``p_loc`` and ``p_non`` are one item's scores in the two settings
  (0/1 correctness for MCQ); RCA and PNLG are averaged over a country's items first.
  Per item, RCA is 1 only when both forms are answered right, so it reads as the rate of
  *consistent* correctness.

Aggregation: a language's value and the overall value are the unweighted means of the
values of their countries (every country counts the same, as in the paper's averages),
for every metric including the accuracies. Intervals come from a bootstrap that
resamples each country's items (both settings of an item together) and recomputes
everything, so country, language and overall intervals are consistent.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

from yapo.errors import YapoError
from yapo.evaluate.bootstrap import (
    DEFAULT_CONFIDENCE,
    DEFAULT_SAMPLES,
    Interval,
    check_settings,
    interval_from_json,
    nanmean,
    percentile_interval,
    resample_indices,
)

Unit = Literal["country", "item"]
UNITS: tuple[Unit, ...] = ("country", "item")
EPS = 1e-6
METRICS = ("localized", "nonlocalized", "mixed", "rca", "pnlg")
Array = NDArray[np.float64]


def rca_terms(p_loc: Array | float, p_non: Array | float, eps: float = EPS) -> Array:
    """Elementwise ``2·p_loc·p_non / (p_loc + p_non + ε)`` (the harmonic mean, smoothed)."""
    p, q = np.asarray(p_loc, dtype=np.float64), np.asarray(p_non, dtype=np.float64)
    return np.asarray(2.0 * p * q / (p + q + eps), dtype=np.float64)


def pnlg_terms(
    p_loc: Array | float, p_non: Array | float, alpha: float = 1.0, eps: float = EPS
) -> Array:
    """Elementwise ``(p_loc − p_non) / (p̄^α + ε)``: the gap relative to the level."""
    p, q = np.asarray(p_loc, dtype=np.float64), np.asarray(p_non, dtype=np.float64)
    mean = (p + q) / 2.0
    return np.asarray((p - q) / (np.power(mean, alpha) + eps), dtype=np.float64)


def rca(p_loc: Sequence[float] | Array, p_non: Sequence[float] | Array, eps: float = EPS) -> float:
    """RCA: the mean of :func:`rca_terms` over pairs (pairs with a NaN are skipped)."""
    terms = rca_terms(np.asarray(p_loc, dtype=np.float64), np.asarray(p_non, dtype=np.float64), eps)
    return float(nanmean(terms))


def pnlg(
    p_loc: Sequence[float] | Array,
    p_non: Sequence[float] | Array,
    alpha: float = 1.0,
    eps: float = EPS,
) -> float:
    """PNLG_α: the mean of :func:`pnlg_terms` over pairs (pairs with a NaN are skipped)."""
    check_alpha(alpha)
    terms = pnlg_terms(
        np.asarray(p_loc, dtype=np.float64), np.asarray(p_non, dtype=np.float64), alpha, eps
    )
    return float(nanmean(terms))


def check_alpha(alpha: float) -> None:
    if not 0.0 <= float(alpha) <= 1.0:
        raise YapoError(f"PNLG's alpha must be in [0, 1] (see docs/design.md), got {alpha}")


@dataclass
class PairScore:
    """One item's score in both settings, in [0, 1]; NaN where it could not be scored."""

    id: str
    country: str
    language: str
    localized: float
    nonlocalized: float


@dataclass
class GroupMetrics:
    """The metrics of one country, one language, or everything."""

    level: Literal["country", "language", "overall"]
    language: str | None
    country: str | None
    n_items: int
    n_countries: int
    metrics: dict[str, Interval]

    @property
    def name(self) -> str:
        if self.level == "overall":
            return "overall"
        if self.level == "language":
            return str(self.language)
        return str(self.country)

    def to_json(self) -> dict[str, Any]:
        return {
            "level": self.level,
            "language": self.language,
            "country": self.country,
            "n_items": self.n_items,
            "n_countries": self.n_countries,
            "metrics": {k: v.to_json() for k, v in self.metrics.items()},
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> GroupMetrics:
        return cls(
            level=data["level"],
            language=data.get("language"),
            country=data.get("country"),
            n_items=int(data["n_items"]),
            n_countries=int(data["n_countries"]),
            metrics={k: interval_from_json(v) for k, v in data["metrics"].items()},
        )


@dataclass
class MetricsSummary:
    """Rows for every country, language and overall, plus the settings that made them."""

    rows: list[GroupMetrics]
    settings: dict[str, Any] = field(default_factory=dict)

    def get(self, level: str, name: str | None = None) -> GroupMetrics:
        for row in self.rows:
            if row.level == level and (name is None or row.name == name):
                return row
        raise KeyError(f"no {level} row named {name!r}")

    @property
    def overall(self) -> GroupMetrics:
        return self.get("overall")

    def to_json(self) -> dict[str, Any]:
        return {"settings": self.settings, "rows": [r.to_json() for r in self.rows]}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> MetricsSummary:
        return cls([GroupMetrics.from_json(r) for r in data["rows"]], dict(data["settings"]))


def country_metrics(
    loc: Array, non: Array, unit: Unit = "country", alpha: float = 1.0, eps: float = EPS
) -> dict[str, Array]:
    """Every metric of one country, for each row of ``loc``/``non`` (shape ``(B, n)``).

    Row b holds the item scores of one (re)sample; the result maps each metric name to
    an array of shape ``(B,)``.
    """
    p_loc = nanmean(loc, axis=-1)
    p_non = nanmean(non, axis=-1)
    out: dict[str, Array] = {
        "localized": p_loc,
        "nonlocalized": p_non,
        "mixed": nanmean(np.concatenate([loc, non], axis=-1), axis=-1),
    }
    if unit == "country":
        out["rca"] = rca_terms(p_loc, p_non, eps)
        out["pnlg"] = pnlg_terms(p_loc, p_non, alpha, eps)
    else:
        out["rca"] = nanmean(rca_terms(loc, non, eps), axis=-1)
        out["pnlg"] = nanmean(pnlg_terms(loc, non, alpha, eps), axis=-1)
    return out


def summarize(
    pairs: Sequence[PairScore],
    *,
    unit: Unit = "country",
    alpha: float = 1.0,
    eps: float = EPS,
    samples: int = DEFAULT_SAMPLES,
    confidence: float = DEFAULT_CONFIDENCE,
    seed: int = 0,
) -> MetricsSummary:
    """Metrics with bootstrap intervals for every country, every language, and overall.

    ``samples=0`` skips the bootstrap (intervals are NaN). The same ``seed`` gives the
    same intervals, and every method evaluated on the same items is resampled with the
    same indices, so their intervals are paired.
    """
    if unit not in UNITS:
        raise YapoError(f"unit must be one of {UNITS}, got {unit!r}")
    check_alpha(alpha)
    check_settings(samples, confidence)
    if not pairs:
        raise YapoError("there are no scored items to compute metrics from")
    groups: dict[tuple[str, str], list[PairScore]] = {}
    for pair in pairs:
        groups.setdefault((pair.language, pair.country), []).append(pair)
    keys = sorted(groups)
    rng = np.random.default_rng(seed)
    points: dict[tuple[str, str], dict[str, float]] = {}
    replicates: dict[tuple[str, str], dict[str, Array]] = {}
    for key in keys:
        items = groups[key]
        loc = np.array([p.localized for p in items], dtype=np.float64)
        non = np.array([p.nonlocalized for p in items], dtype=np.float64)
        point = country_metrics(loc[None, :], non[None, :], unit, alpha, eps)
        points[key] = {name: float(values[0]) for name, values in point.items()}
        if samples:
            idx = resample_indices(rng, len(items), samples)
            replicates[key] = country_metrics(loc[idx], non[idx], unit, alpha, eps)
    settings = {
        "unit": unit,
        "alpha": alpha,
        "eps": eps,
        "bootstrap_samples": samples,
        "confidence": confidence,
        "seed": seed,
        "aggregation": "unweighted mean over countries",
    }
    rows = [_row("country", [key], groups, points, replicates, samples, confidence) for key in keys]
    languages = sorted({language for language, _ in keys})
    for language in languages:
        members = [key for key in keys if key[0] == language]
        rows.append(_row("language", members, groups, points, replicates, samples, confidence))
    rows.append(_row("overall", keys, groups, points, replicates, samples, confidence))
    return MetricsSummary(rows, settings)


def _row(
    level: Literal["country", "language", "overall"],
    members: list[tuple[str, str]],
    groups: dict[tuple[str, str], list[PairScore]],
    points: dict[tuple[str, str], dict[str, float]],
    replicates: dict[tuple[str, str], dict[str, Array]],
    samples: int,
    confidence: float,
) -> GroupMetrics:
    metrics: dict[str, Interval] = {}
    for name in METRICS:
        value = float(nanmean(np.array([points[m][name] for m in members], dtype=np.float64)))
        if samples:
            stacked = np.stack([replicates[m][name] for m in members], axis=0)
            metrics[name] = percentile_interval(value, nanmean(stacked, axis=0), confidence)
        else:
            metrics[name] = Interval(value, float("nan"), float("nan"))
    language = members[0][0] if level != "overall" else None
    country = members[0][1] if level == "country" else None
    return GroupMetrics(
        level=level,
        language=language,
        country=country,
        n_items=sum(len(groups[m]) for m in members),
        n_countries=len(members),
        metrics=metrics,
    )
