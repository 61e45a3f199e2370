"""Each condition against no steering on the same items: a paired bootstrap of the difference.

Two conditions scored on the same questions are strongly correlated (an easy question is
easy for both), so their separate intervals overlap even when one is consistently
better. The question a user asks — "did steering help?" — is answered by the interval of
the *difference*: resample the items once and recompute both conditions on the same
resample. Items are resampled within each country (as in :mod:`yapo.evaluate.metrics`)
and the overall value is the unweighted mean over countries, like the tables.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from yapo.evaluate.bootstrap import (
    DEFAULT_CONFIDENCE,
    DEFAULT_SAMPLES,
    Interval,
    nanmean,
    percentile_interval,
)
from yapo.evaluate.metrics import EPS, PairScore, rca_terms

PAIRED_METRICS = ("mixed", "rca")


def _item_values(pair: PairScore, metric: str) -> float:
    if metric == "mixed":
        return float(nanmean(np.array([pair.localized, pair.nonlocalized])))
    return float(rca_terms(pair.localized, pair.nonlocalized, EPS))


def paired_difference(
    baseline: Sequence[PairScore],
    other: Sequence[PairScore],
    metric: str = "mixed",
    *,
    samples: int = DEFAULT_SAMPLES,
    confidence: float = DEFAULT_CONFIDENCE,
    seed: int = 0,
) -> Interval:
    """``other − baseline`` of ``metric`` on the items both scored, with its interval."""
    base = {p.id: p for p in baseline}
    mine = {p.id: p for p in other}
    shared = sorted(set(base) & set(mine))
    countries = sorted({base[i].country for i in shared})
    diffs = {
        c: np.array(
            [
                _item_values(mine[i], metric) - _item_values(base[i], metric)
                for i in shared
                if base[i].country == c
            ]
        )
        for c in countries
    }
    if not countries:
        return Interval(float("nan"), float("nan"), float("nan"))
    value = float(np.mean([nanmean(d) for d in diffs.values()]))
    rng = np.random.default_rng(seed)
    replicates = np.zeros(samples)
    for c in countries:
        d = diffs[c]
        picks = rng.integers(0, len(d), size=(samples, len(d)))
        replicates += nanmean(d[picks], axis=1)
    replicates /= len(countries)
    return percentile_interval(value, replicates, confidence)


def paired_table(results: Sequence[Any], baseline_name: str, **options: Any) -> dict[str, Any]:
    """``{condition: {metric: interval}}`` for every condition scored with the baseline."""
    runs = {r.condition.name: r.mcq for r in results if r.mcq is not None}
    if baseline_name not in runs:
        return {}
    baseline = runs[baseline_name].pairs()
    return {
        name: {
            metric: paired_difference(baseline, run.pairs(), metric, **options).to_json()
            for metric in PAIRED_METRICS
        }
        for name, run in runs.items()
        if name != baseline_name
    }


def paired_markdown(table: dict[str, Any], confidence: float = DEFAULT_CONFIDENCE) -> str:
    """The paired differences as a Markdown table (percentage points)."""
    if not table:
        return ""

    def cell(data: dict[str, float | None]) -> str:
        if data["value"] is None:
            return "–"
        low, high = data["low"], data["high"]
        interval = "" if low is None or high is None else f" [{100 * low:+.1f}, {100 * high:+.1f}]"
        return f"{100 * data['value']:+.1f}{interval}"

    lines = [
        f"### Against no steering: paired differences ({confidence:.0%} bootstrap interval, "
        "percentage points)",
        "",
        "| Condition | Δ mixed accuracy | Δ RCA |",
        "| --- | --- | --- |",
    ]
    lines += [f"| {name} | {cell(m['mixed'])} | {cell(m['rca'])} |" for name, m in table.items()]
    return "\n".join(lines) + "\n"
