"""The trainable vector of BiPO (dense) and YaPO (sparse), and the change it makes.

Each parametrisation computes ``h' - h`` two ways, which must agree:

* :meth:`Steering.fast_delta` — from the cached layer-``L`` states (and, for YaPO, their
  cached SAE codes ``s``): the trainer's fast path;
* :meth:`Steering.hook_delta` — from the live hidden states inside a hook on block
  ``L``: the straightforward ``--no-cache`` path (for YaPO the full SAE round trip of
  Eq. 3 at every token).

YaPO's change is ``(ReLU(s + u) - s) @ W_dec`` with ``u = d·λ·v``. It is written with
ReLU, not with the equal ``min`` form, because ReLU's gradient ``1[s + u > 0]`` is zero
for a latent that is silent (``s = 0``) while ``u = 0``: such a latent gets no gradient,
so with AdamW (whose decay of 0 is 0) it stays exactly zero in ``v``.

RePS (:mod:`yapo.methods.objectives`) also needs the *null* intervention ``Φ_Null``,
which removes ``v``'s direction from the stream instead of adding it, again two ways
(:meth:`Steering.null_fast_delta`, :meth:`Steering.null_hook_delta`):

* dense: ``Φ_Null(h) = h - ReLU(h·v)/‖v‖² · v`` (AxBench's form: only a positive
  component along ``v`` is removed; it does not depend on ``λ`` or on ``v``'s norm);
* sparse: the same in the SAE's code space, through YaPO's exact edit:
  ``Φ_Null(h) = Dec(ReLU(s + u_t)) + (h - Dec(s))`` with the per-position
  ``u_t = -ReLU(s_t·v)/‖v‖² · v``. A latent that never fires, while its ``v_i = 0``,
  still gets no gradient.

At ``v = 0`` both are the identity (``‖v‖²`` is clamped away from zero, and then
``ReLU(0)`` has a zero gradient).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

import torch
from torch import Tensor, nn

from yapo.methods.batches import BatchCodes
from yapo.sae.model import SAE
from yapo.vectors.base import SteeringVector
from yapo.vectors.dense import DenseVector
from yapo.vectors.sparse import SparseVector, sparse_delta_reference

NULL_EPS = 1e-30  # ‖v‖² below this counts as v = 0 (then Φ_Null is the identity)


class Steering(nn.Module, ABC):
    """A trainable vector ``v`` (initialised at zero) and the steering it causes."""

    method: str
    needs_codes: bool = False
    vector: nn.Parameter

    def __init__(self, size: int, multiplier: float = 1.0) -> None:
        super().__init__()
        self.vector = nn.Parameter(torch.zeros(size, dtype=torch.float32))
        self.multiplier = float(multiplier)

    def scaled(self, direction: float) -> Tensor:
        """``u = d·λ·v`` (RePS passes its steering factor ``α`` as ``d``)."""
        return self.vector * (float(direction) * self.multiplier)

    @abstractmethod
    def scale_values(self, rows: Tensor) -> Tensor:
        """The values ``v`` is added to, for layer-``L`` states ``rows`` ``(n, d_model)``:
        their RMS is the step-size scale (see :mod:`yapo.methods.scale`)."""

    @abstractmethod
    def fast_delta(self, states: Tensor, codes: BatchCodes | None, direction: float) -> Tensor:
        """``h' - h`` for cached states ``(rows, seq, d_model)``, broadcastable to them."""

    @abstractmethod
    def hook_delta(self, hidden: Tensor, direction: float) -> Tensor:
        """``h' - h`` computed from live hidden states (the straightforward path)."""

    @abstractmethod
    def null_fast_delta(self, states: Tensor, codes: BatchCodes | None) -> Tensor:
        """``Φ_Null(h) - h`` for cached states ``(rows, seq, d_model)`` (RePS)."""

    @abstractmethod
    def null_hook_delta(self, hidden: Tensor) -> Tensor:
        """``Φ_Null(h) - h`` from live hidden states (the straightforward path)."""

    def null_coefficient(self, values: Tensor) -> Tensor:
        """``ReLU(x·v)/‖v‖²`` per row of ``values`` ``(..., size)`` (float32)."""
        v = self.vector.to(values.device)
        return torch.relu(values @ v) / (v @ v).clamp_min(NULL_EPS)

    @abstractmethod
    def to_vector(
        self, model: nn.Module, layer: int, method: str, hyperparameters: dict[str, Any]
    ) -> SteeringVector:
        """The trained vector as a saveable :class:`SteeringVector`."""


class DenseSteering(Steering):
    """BiPO: ``h' = h + d·λ·v`` with ``v`` in R^{d_model}."""

    method = "bipo"

    def scale_values(self, rows: Tensor) -> Tensor:
        return rows

    def fast_delta(self, states: Tensor, codes: BatchCodes | None, direction: float) -> Tensor:
        return self.scaled(direction).to(device=states.device, dtype=states.dtype)

    def hook_delta(self, hidden: Tensor, direction: float) -> Tensor:
        return self.scaled(direction).to(device=hidden.device, dtype=hidden.dtype)

    def null_fast_delta(self, states: Tensor, codes: BatchCodes | None) -> Tensor:
        return self.null_hook_delta(states)  # needs only h, cached or live

    def null_hook_delta(self, hidden: Tensor) -> Tensor:
        h = hidden.float()
        v = self.vector.to(h.device)
        delta = -self.null_coefficient(h).unsqueeze(-1) * v
        return delta.to(hidden.dtype)

    def to_vector(
        self, model: nn.Module, layer: int, method: str, hyperparameters: dict[str, Any]
    ) -> SteeringVector:
        return DenseVector.create(
            self.vector.detach().clone(),
            model,
            layer,
            method=method,
            hyperparameters=hyperparameters,
        )


class SparseSteering(Steering):
    """YaPO: ``h' = Dec(ReLU(Enc(h) + d·λ·v)) + (h - Dec(Enc(h)))`` with ``v`` in R^{d_sae}."""

    method = "yapo"
    needs_codes = True

    def __init__(self, sae: SAE, multiplier: float = 1.0) -> None:
        super().__init__(sae.d_sae, multiplier)
        self.sae = sae
        self.sae.requires_grad_(False)

    def scale_values(self, rows: Tensor) -> Tensor:
        codes = self.sae.encode(rows.to(self.sae.W_dec.device).float())
        return codes[codes != 0]

    def fast_delta(self, states: Tensor, codes: BatchCodes | None, direction: float) -> Tensor:
        if codes is None:
            raise ValueError("the sparse fast path needs the batch's SAE codes")
        u = self.scaled(direction).to(self.sae.W_dec.device)
        w_dec = self.sae.W_dec
        # Latents silent at every position of the batch: ReLU(0 + u) - 0 = ReLU(u), the same
        # at every position, so one dense vector.
        silent = torch.relu(u).masked_fill(codes.active_mask, 0.0) @ w_dec
        # Latents active somewhere: the exact per-position change on the active columns.
        s = codes.dense
        active = (torch.relu(s + u[codes.active]) - s) @ w_dec[codes.active]
        rows, seq = int(states.shape[0]), int(states.shape[1])
        delta = (active + silent).view(rows, seq, -1)
        return delta.to(device=states.device, dtype=states.dtype)

    def hook_delta(self, hidden: Tensor, direction: float) -> Tensor:
        u = self.scaled(direction).to(self.sae.W_dec.device)
        return sparse_delta_reference(self.sae, hidden, u).to(hidden.dtype).to(hidden.device)

    def null_fast_delta(self, states: Tensor, codes: BatchCodes | None) -> Tensor:
        if codes is None:
            raise ValueError("the sparse fast path needs the batch's SAE codes")
        w_dec = self.sae.W_dec
        v = self.vector.to(w_dec.device)
        s = codes.dense  # (rows*seq, a): codes of the latents active somewhere
        v_active = v[codes.active]
        # s·v needs only the active latents (the others are 0 in s).
        coefficient = torch.relu(s @ v_active) / (v @ v).clamp_min(NULL_EPS)  # c_t >= 0
        u = -coefficient.unsqueeze(-1) * v_active
        active = (torch.relu(s + u) - s) @ w_dec[codes.active]
        # Silent latents: ReLU(0 - c_t·v_i) = c_t·ReLU(-v_i), one dense vector times c_t.
        silent = torch.relu(-v).masked_fill(codes.active_mask, 0.0) @ w_dec
        rows, seq = int(states.shape[0]), int(states.shape[1])
        delta = (active + coefficient.unsqueeze(-1) * silent).view(rows, seq, -1)
        return delta.to(device=states.device, dtype=states.dtype)

    def null_hook_delta(self, hidden: Tensor) -> Tensor:
        codes = self.sae.encode(hidden.to(self.sae.W_dec.device))
        u = -self.null_coefficient(codes).unsqueeze(-1) * self.vector.to(codes.device)
        delta = self.sae.decode(torch.relu(codes + u)) - self.sae.decode(codes)
        return delta.to(hidden.dtype).to(hidden.device)

    def encode_sparse(self, states: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Non-zero SAE code entries of ``states`` ``(t, d_model)``: positions, latents, values."""
        codes = self.sae.encode(states)
        positions, latents = torch.nonzero(codes, as_tuple=True)
        return positions.cpu(), latents.cpu(), codes[positions, latents].cpu()

    def to_vector(
        self, model: nn.Module, layer: int, method: str, hyperparameters: dict[str, Any]
    ) -> SteeringVector:
        return SparseVector.create(
            self.vector.detach().clone(),
            model,
            layer,
            self.sae,
            method=method,
            hyperparameters=hyperparameters,
        )
