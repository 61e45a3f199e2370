"""Percentile-bootstrap confidence intervals.

Why a bootstrap and not a normal approximation: RCA and PNLG are ratios of accuracies
averaged over countries, whose sampling distribution is skewed (and bounded) for the
small per-country sample sizes of cultural benchmarks. Resampling the *items* of each
country (stratified by country, with both settings of an item kept together) and
recomputing every metric gives intervals that respect all of that with no formulas.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from yapo.errors import YapoError

DEFAULT_SAMPLES = 1000
DEFAULT_CONFIDENCE = 0.95


@dataclass(frozen=True)
class Interval:
    """A point estimate with a (low, high) confidence interval; NaN where undefined."""

    value: float
    low: float
    high: float

    def to_json(self) -> dict[str, float | None]:
        return {
            k: _finite_or_none(v)
            for k, v in (("value", self.value), ("low", self.low), ("high", self.high))
        }


def _finite_or_none(x: float) -> float | None:
    return float(x) if np.isfinite(x) else None


def interval_from_json(data: dict[str, float | None]) -> Interval:
    def get(key: str) -> float:
        value = data.get(key)
        return float("nan") if value is None else float(value)

    return Interval(get("value"), get("low"), get("high"))


def check_settings(samples: int, confidence: float) -> None:
    if samples < 0:
        raise YapoError(f"the number of bootstrap samples must be >= 0, got {samples}")
    if not 0.0 < confidence < 1.0:
        raise YapoError(f"confidence must be between 0 and 1 (e.g. 0.95), got {confidence}")


def resample_indices(rng: np.random.Generator, n: int, samples: int) -> NDArray[np.intp]:
    """``samples`` rows of ``n`` indices drawn with replacement from ``range(n)``."""
    return rng.integers(0, n, size=(samples, n))


def percentile_interval(
    value: float, replicates: NDArray[np.float64], confidence: float = DEFAULT_CONFIDENCE
) -> Interval:
    """The percentile interval of ``replicates`` around the point estimate ``value``.

    Replicates that are NaN (a metric undefined in that resample) are ignored; with no
    finite replicate the interval is (NaN, NaN).
    """
    finite = replicates[np.isfinite(replicates)]
    if finite.size == 0:
        return Interval(float(value), float("nan"), float("nan"))
    tail = (1.0 - confidence) / 2.0
    low, high = np.quantile(finite, [tail, 1.0 - tail])
    return Interval(float(value), float(low), float(high))


def nanmean(values: NDArray[np.float64], axis: int = -1) -> NDArray[np.float64]:
    """Mean ignoring NaN, NaN (without a warning) where everything is NaN."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=RuntimeWarning)
        return np.asarray(np.nanmean(values, axis=axis), dtype=np.float64)
