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


class Steering(nn.Module, ABC):
    """A trainable vector ``v`` (initialised at zero) and the steering it causes."""

    method: str
    needs_codes: bool = False
    vector: nn.Parameter

    def __init__(self, size: int, multiplier: float = 1.0) -> None:
        super().__init__()
        self.vector = nn.Parameter(torch.zeros(size, dtype=torch.float32))
        self.multiplier = float(multiplier)

    def scaled(self, direction: int) -> Tensor:
        """``u = d·λ·v``."""
        return self.vector * (float(direction) * self.multiplier)

    @abstractmethod
    def fast_delta(self, states: Tensor, codes: BatchCodes | None, direction: int) -> Tensor:
        """``h' - h`` for cached states ``(rows, seq, d_model)``, broadcastable to them."""

    @abstractmethod
    def hook_delta(self, hidden: Tensor, direction: int) -> Tensor:
        """``h' - h`` computed from live hidden states (the straightforward path)."""

    @abstractmethod
    def to_vector(
        self, model: nn.Module, layer: int, method: str, hyperparameters: dict[str, Any]
    ) -> SteeringVector:
        """The trained vector as a saveable :class:`SteeringVector`."""


class DenseSteering(Steering):
    """BiPO: ``h' = h + d·λ·v`` with ``v`` in R^{d_model}."""

    method = "bipo"

    def fast_delta(self, states: Tensor, codes: BatchCodes | None, direction: int) -> Tensor:
        return self.scaled(direction).to(device=states.device, dtype=states.dtype)

    def hook_delta(self, hidden: Tensor, direction: int) -> Tensor:
        return self.scaled(direction).to(device=hidden.device, dtype=hidden.dtype)

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

    def fast_delta(self, states: Tensor, codes: BatchCodes | None, direction: int) -> Tensor:
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

    def hook_delta(self, hidden: Tensor, direction: int) -> Tensor:
        u = self.scaled(direction).to(self.sae.W_dec.device)
        return sparse_delta_reference(self.sae, hidden, u).to(hidden.dtype).to(hidden.device)

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
