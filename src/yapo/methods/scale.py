"""The scale of what a vector steers, so that one step size fits every model.

AdamW moves each coordinate of ``v`` by about the learning rate per step, whatever the
gradient's size. An absolute rate is therefore tied to one model: 5e-4 is a sensible
step against Gemma-2-2B's stream at layer 12, but nothing against Gemma 3 270M's, whose
per-coordinate RMS at layer 14 is about 800. The trainer instead measures the scale of
what ``v`` is added to and multiplies a *relative* rate by it:

* a dense vector (BiPO) is added to the residual stream ``h``: the scale is the RMS of the
  layer-``L`` states over the response positions of the training sequences,
  ``sqrt(mean(h_i²))``;
* a sparse vector (YaPO) is added to the SAE code ``s = Enc(h)``: the scale is the RMS of
  the *non-zero* code entries at those positions (the typical size of a firing latent;
  the zeros say nothing about how large a latent is when it fires).

With relative rate ``r`` a coordinate can move by about ``r × scale`` per step, so after
``n`` steps of a consistent gradient ``|v_i| ≲ n·r·scale``: the number of steps to reach
a given strength no longer depends on the model. Weight decay is expressed on the same
scale (effective decay ``wd / scale``): with AdamW, decay ``wd`` holds a coordinate near
``1 / wd`` in absolute units, which would be far below a useful strength on a stream
as large as Gemma 3's; relative decay holds it near ``scale / wd``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from torch import Tensor


@dataclass
class ScaleMeter:
    """Running sum of squares and count, in float64 (order-independent enough to be exact
    when the same batches are fed in the same order, as the cached and straightforward
    paths do)."""

    sum_squares: float = 0.0
    count: int = 0

    def add(self, values: Tensor) -> None:
        flat = values.detach().double().flatten()
        self.sum_squares += float((flat * flat).sum())
        self.count += int(flat.numel())

    @property
    def rms(self) -> float:
        if self.count == 0:
            return float("nan")
        return math.sqrt(self.sum_squares / self.count)


@dataclass(frozen=True)
class StepSize:
    """The effective AdamW settings of a run and how they were derived."""

    relative_learning_rate: float
    relative_weight_decay: float
    scale: float
    measured: bool  # False: the user gave the scale (1.0 = absolute settings)

    @property
    def learning_rate(self) -> float:
        return self.relative_learning_rate * self.scale

    @property
    def weight_decay(self) -> float:
        return self.relative_weight_decay / self.scale

    def to_json(self) -> dict[str, float | bool]:
        return {
            "relative_learning_rate": self.relative_learning_rate,
            "relative_weight_decay": self.relative_weight_decay,
            "scale": self.scale,
            "scale_measured": self.measured,
            "effective_learning_rate": self.learning_rate,
            "effective_weight_decay": self.weight_decay,
        }


def check_scale(scale: float, what: str) -> float:
    """A usable scale, or a clear error (an SAE that never fires, all-zero states)."""
    from yapo.errors import YapoError

    if not math.isfinite(scale) or scale <= 0:
        raise YapoError(
            f"cannot measure the scale of {what} (got {scale}); the training responses "
            "produced no usable activations. Pass an explicit scale (--lr-scale 1 makes "
            "--lr absolute)"
        )
    return scale


def response_rows(states: Tensor, response_mask: Tensor) -> Tensor:
    """``states[b, t]`` at response positions, as ``(n, d_model)`` float32."""
    return states[response_mask.to(states.device)].float()
