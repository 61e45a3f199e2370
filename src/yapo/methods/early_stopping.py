"""Keep the vector with the best validation loss, and stop when it stops improving.

A preference vector trained past its best point keeps fitting the training pairs while
its validation loss rises, and a strong over-fitted vector is also a less fluent one. So
with evaluation pairs (carved from the *training* questions, never the test ones) the
trainer remembers the vector of the lowest evaluation loss and, with a patience, stops
after that many evaluations without improvement. The state is part of every checkpoint,
so a resumed run makes the same decisions as an uninterrupted one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from torch import Tensor


@dataclass
class BestTracker:
    """The best evaluation so far and how many evaluations since it improved."""

    patience: int | None = None
    best_loss: float = math.inf
    best_step: int = 0
    best_vector: Tensor | None = None
    stale: int = 0

    def update(self, step: int, loss: float, vector: Tensor) -> None:
        """Record one evaluation; a strictly lower loss becomes the new best."""
        if loss < self.best_loss:
            self.best_loss = loss
            self.best_step = step
            self.best_vector = vector.detach().clone()
            self.stale = 0
        else:
            self.stale += 1

    @property
    def should_stop(self) -> bool:
        return self.patience is not None and self.stale >= self.patience

    def state(self) -> tuple[dict[str, Tensor], dict[str, Any]]:
        """Tensors and JSON info to put into a checkpoint."""
        tensors = {"best.vector": self.best_vector} if self.best_vector is not None else {}
        info = {"best_loss": self.best_loss, "best_step": self.best_step, "stale": self.stale}
        return tensors, {"early_stopping": info}

    def load(self, tensors: dict[str, Tensor], info: dict[str, Any]) -> None:
        """Put a checkpoint's state back (a checkpoint without it: nothing evaluated yet)."""
        saved = info.get("early_stopping")
        if saved is None:
            return
        self.best_loss = float(saved["best_loss"])
        self.best_step = int(saved["best_step"])
        self.stale = int(saved["stale"])
        best = tensors.get("best.vector")
        self.best_vector = best.clone() if best is not None else None

    def to_json(self) -> dict[str, Any]:
        return {
            "best_step": self.best_step if self.best_vector is not None else None,
            "best_eval_loss": self.best_loss if self.best_vector is not None else None,
            "stopped_early": self.should_stop,
        }
