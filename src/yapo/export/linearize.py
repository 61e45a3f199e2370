"""A dense stand-in for a sparse (SAE-space) vector, with its measured error.

A sparse vector's edit depends on ``h`` (the identity in docs/design.md, ``u = d·λ·v``)::

    δ(h) = u⁺·W_dec − Σ_{i: u_i<0} min(s_i(h), −u_i)·W_dec[i]

so a tool that only adds a fixed direction (llama.cpp) can run it only approximately.
Two constants are on offer:

* ``u⁺·W_dec`` (the issue's ``ReLU(λv)·W_dec``): exact when ``u`` has no negative entry
  (then the second term is empty), otherwise it ignores every removed feature;
* the mean of ``δ(h)`` over the positions of some representative text: among all
  constant vectors ``c`` it minimises ``E‖δ(h) − c‖²`` (the mean is the least-squares
  constant), so it is never worse than ``u⁺·W_dec`` on that text. This is the default.

The error reported is ``sqrt(Σ‖δ(h) − c‖² / Σ‖δ(h)‖²)`` over all positions, measured on
the block's unsteered output — which is exactly the ``h`` the edit sees, because
steering block ``L`` cannot change blocks ``0..L`` at any position.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor, nn

from yapo.errors import YapoError
from yapo.intervene import input_device
from yapo.vectors.sparse import SparseVector

LinearizeMethod = Literal["mean", "positive"]


@dataclass
class Linearization:
    """The constant ``dense`` that stands in for a sparse vector at one (λ, d)."""

    dense: Tensor
    method: str  # "exact" (no negative entries), "mean" or "positive"
    multiplier: float
    direction: int
    relative_error: float
    positive_part_error: float
    n_positions: int

    def summary(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "multiplier": self.multiplier,
            "direction": self.direction,
            "relative_error": self.relative_error,
            "positive_part_relative_error": self.positive_part_error,
            "positions": self.n_positions,
            "norm": float(self.dense.norm()),
        }


def layer_states(
    model: nn.Module, tokenizer: Any, texts: Sequence[str], layer: int, max_length: int = 512
) -> Tensor:
    """Unsteered outputs of block ``layer`` at every non-padding position, ``(N, d)`` float32."""
    if not texts:
        raise YapoError("need at least one text to measure a linearization on")
    device = input_device(model)
    rows = []
    with torch.no_grad():
        for text in texts:  # one at a time: no padding to mask, memory stays small
            batch = tokenizer(text, return_tensors="pt", truncation=True, max_length=max_length)
            batch = {k: v.to(device) for k, v in batch.items()}
            output = model(**batch, output_hidden_states=True)
            rows.append(output.hidden_states[layer + 1][0].float().cpu())
    return torch.cat(rows)


def _relative_error(deltas: Tensor, constant: Tensor) -> float:
    total = float(deltas.pow(2).sum())
    if total == 0.0:
        return 0.0 if float(constant.norm()) == 0.0 else float("inf")
    return float(((deltas - constant).pow(2).sum() / total).sqrt())


def linearize(
    vector: SparseVector,
    hidden: Tensor | None = None,
    *,
    multiplier: float = 1.0,
    direction: int = 1,
    method: LinearizeMethod = "mean",
) -> Linearization:
    """Replace ``vector``'s edit at (λ, d) by one constant, measuring the error on ``hidden``.

    ``hidden`` holds block-``L`` states ``(N, d_model)`` of representative text (see
    :func:`layer_states`); it may be omitted only when the edit is constant anyway.
    """
    if direction not in (-1, 1):
        raise YapoError(f"direction must be +1 or -1, got {direction!r}")
    if method not in ("mean", "positive"):
        raise YapoError(f"unknown linearization {method!r}; use 'mean' or 'positive'")
    with torch.no_grad():
        plan = vector.edit.plan(vector.scaled(multiplier, direction))
        positive = plan.positive_term.float().cpu()  # u⁺·W_dec
        if not plan.negative.numel():
            n = 0 if hidden is None else int(hidden.reshape(-1, hidden.shape[-1]).shape[0])
            return Linearization(positive, "exact", multiplier, direction, 0.0, 0.0, n)
        if hidden is None or hidden.numel() == 0:
            raise YapoError(
                "this sparse vector removes features (negative entries at this multiplier), so "
                "its edit depends on the text; give text to measure the dense approximation on"
            )
        states = hidden.reshape(-1, hidden.shape[-1]).float().to(vector.sae.W_dec.device)
        deltas = vector.delta(states, multiplier=multiplier, direction=direction).float().cpu()
    dense = deltas.mean(dim=0) if method == "mean" else positive
    return Linearization(
        dense=dense,
        method=method,
        multiplier=float(multiplier),
        direction=int(direction),
        relative_error=_relative_error(deltas, dense),
        positive_part_error=_relative_error(deltas, positive),
        n_positions=int(deltas.shape[0]),
    )
