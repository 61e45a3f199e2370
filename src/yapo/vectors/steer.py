"""One value for "how the model is steered": vector, λ, direction and positions.

Evaluation, generation, serving and export all need the same four things about a
steering intervention; passing them as one frozen value keeps signatures short and
makes "unsteered" a value too (``Steer()``, or any ``Steer`` whose λ is 0), so a table's
baseline and its steered conditions go through the same code.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, replace
from typing import Any, Final

import torch
from torch import Tensor, nn

from yapo.errors import YapoError
from yapo.intervene import POSITIONS, Positions
from yapo.vectors.base import SteeringVector


@dataclass(frozen=True)
class Steer:
    """``vector`` at multiplier λ and direction d on ``positions``; unsteered when
    ``vector`` is ``None`` or λ is 0.

    ``direction`` is the paper's d in {-1, +1} (-1 steers away from the behaviour);
    ``positions`` is ``all``, ``prompt`` or ``generated`` (see :mod:`yapo.intervene.positions`).
    """

    vector: SteeringVector | None = None
    multiplier: float = 1.0
    direction: int = 1
    positions: Positions = "all"

    def __post_init__(self) -> None:
        if self.direction not in (-1, 1):
            raise YapoError(f"direction must be +1 or -1, got {self.direction!r}")
        if self.positions not in POSITIONS:
            raise YapoError(f"positions must be one of {POSITIONS}, got {self.positions!r}")
        if not math.isfinite(float(self.multiplier)):
            raise YapoError(f"the multiplier must be a finite number, got {self.multiplier!r}")

    @property
    def is_unsteered(self) -> bool:
        """No vector, or λ = 0: the model's own behaviour."""
        return self.vector is None or float(self.multiplier) == 0.0

    def at(self, multiplier: float) -> Steer:
        """The same intervention at another λ (a sweep's points)."""
        return replace(self, multiplier=float(multiplier))

    def apply(self, model: nn.Module) -> contextlib.AbstractContextManager[Any]:
        """Steer ``model`` inside a ``with`` block (a no-op when unsteered)."""
        if self.is_unsteered:
            return contextlib.nullcontext()
        assert self.vector is not None
        return self.vector.apply(model, self.multiplier, self.direction, self.positions)

    def delta(self, hidden: Tensor) -> Tensor:
        """``h' - h`` for hidden states ``h`` at the vector's layer (zero when unsteered)."""
        if self.is_unsteered:
            return torch.zeros_like(hidden)
        assert self.vector is not None
        return self.vector.delta(hidden, self.multiplier, self.direction)

    def describe(self) -> dict[str, Any]:
        """JSON-able summary, for reports and run records."""
        return {
            "method": "none" if self.vector is None else self.vector.meta.method,
            "multiplier": 0.0 if self.is_unsteered else float(self.multiplier),
            "direction": self.direction,
            "positions": self.positions,
        }


#: The model's own behaviour: the default wherever a ``Steer`` is optional.
UNSTEERED: Final = Steer()
