"""Finite checks: a vector that is NaN, infinite or overflows is never written or used.

A diverged run leaves numbers that still *look* like a vector: entries of 1e30 are
finite, but their float32 norm is ``inf`` and adding them to a residual stream makes
every normalisation layer overflow, so generation prints nothing and scoring reads
NaN. The check is therefore "every entry finite *and* the float32 norm finite": the
same condition under which the vector can be applied to a float32 model at all.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from yapo.errors import YapoError


class NonFiniteError(YapoError):
    """A vector, checkpoint or statistic holds NaN or infinite values."""


def finite_problem(tensor: Tensor) -> str | None:
    """Why ``tensor`` is unusable (NaN/inf entries, an overflowing norm), or ``None``."""
    if tensor.numel() == 0 or not (tensor.is_floating_point() or tensor.is_complex()):
        return None
    values = tensor.detach()
    bad = int((~torch.isfinite(values)).sum())
    if bad:
        nan = int(torch.isnan(values).sum())
        return f"{bad} of {values.numel()} entries are NaN or infinite ({nan} NaN)"
    norm = float(torch.linalg.vector_norm(values.float()))
    if not math.isfinite(norm):
        return f"its norm overflows float32 (entries up to {float(values.abs().max()):.3g})"
    return None


def check_finite(tensor: Tensor, what: str) -> None:
    """Raise a one-line :class:`NonFiniteError` when ``tensor`` is not usable."""
    problem = finite_problem(tensor)
    if problem is not None:
        raise NonFiniteError(
            f"{what} is not finite: {problem}; it comes from a diverged run (lower the "
            "learning rate / multiplier / beta and train again) and is refused"
        )


def check_finite_number(value: float, what: str) -> float:
    """``value`` as a float, or a :class:`YapoError` for NaN and ±inf."""
    number = float(value)
    if not math.isfinite(number):
        raise YapoError(f"{what} must be a finite number, got {value!r}")
    return number
