"""The trainable vector of BiPO (dense) and YaPO (sparse).

A :class:`Steering` is the parameter ``v`` (initialised at zero), the multiplier λ, what
the step size is measured on, and how to save the result; the change ``h' - h`` it makes
is always computed by the same :class:`yapo.vectors.edits.Edit` the saved vector uses at
inference, so training and use cannot drift apart. Two paths, which must agree:

* :meth:`Steering.fast_delta` — from the cached layer-``L`` states (and, for YaPO, their
  cached SAE codes): the trainer's fast path;
* :meth:`Steering.hook_delta` — from the live hidden states inside a hook on block
  ``L``: the straightforward ``--no-cache`` path (for YaPO the full SAE round trip of
  Eq. 3 at every token).

Both sparse paths use the ReLU form, whose gradient is zero for a latent that never
fires while its ``v_i`` is zero, so with AdamW (whose decay of 0 is 0) such a latent
stays exactly zero in ``v`` (see :mod:`yapo.vectors.edits`). RePS's null intervention
(:meth:`Steering.null_fast_delta`, :meth:`Steering.null_hook_delta`) is the identity at
``v = 0``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

import torch
from torch import Tensor, nn

from yapo.sae.model import SAE
from yapo.vectors.base import SteeringVector
from yapo.vectors.dense import DenseVector
from yapo.vectors.edits import CachedCodes, DenseEdit, Edit, SparseEdit, scale
from yapo.vectors.sparse import SparseVector


class Steering(nn.Module, ABC):
    """A trainable vector ``v`` (initialised at zero) and the edit it steers with."""

    method: str
    needs_codes: bool = False
    vector: nn.Parameter
    edit: Edit

    def __init__(self, size: int, multiplier: float = 1.0) -> None:
        super().__init__()
        self.vector = nn.Parameter(torch.zeros(size, dtype=torch.float32))
        self.multiplier = float(multiplier)

    def scaled(self, direction: float) -> Tensor:
        """``u = d·λ·v`` (RePS passes its steering factor ``α`` as ``d``)."""
        return scale(self.vector, self.multiplier, direction)

    def fast_delta(self, states: Tensor, codes: CachedCodes | None, direction: float) -> Tensor:
        """``h' - h`` for cached states ``(rows, seq, d_model)``, broadcastable to them."""
        return self.edit.cached_delta(states, codes, self.scaled(direction))

    def hook_delta(self, hidden: Tensor, direction: float) -> Tensor:
        """``h' - h`` computed from live hidden states (the straightforward path)."""
        return self.edit.delta(hidden, self.scaled(direction))

    def null_fast_delta(self, states: Tensor, codes: CachedCodes | None) -> Tensor:
        """``Φ_Null(h) - h`` for cached states ``(rows, seq, d_model)`` (RePS)."""
        return self.edit.cached_null_delta(states, codes, self.vector)

    def null_hook_delta(self, hidden: Tensor) -> Tensor:
        """``Φ_Null(h) - h`` from live hidden states (the straightforward path)."""
        return self.edit.null_delta(hidden, self.vector)

    @abstractmethod
    def scale_values(self, rows: Tensor) -> Tensor:
        """The values ``v`` is added to, for layer-``L`` states ``rows`` ``(n, d_model)``:
        their RMS is the step-size scale (see :mod:`yapo.methods.scale`)."""

    @abstractmethod
    def to_vector(
        self, model: nn.Module, layer: int, method: str, hyperparameters: dict[str, Any]
    ) -> SteeringVector:
        """The trained vector as a saveable :class:`SteeringVector`."""


class DenseSteering(Steering):
    """BiPO: ``h' = h + d·λ·v`` with ``v`` in R^{d_model}."""

    method = "bipo"

    def __init__(self, size: int, multiplier: float = 1.0) -> None:
        super().__init__(size, multiplier)
        self.edit = DenseEdit()

    def scale_values(self, rows: Tensor) -> Tensor:
        return rows

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
        self.edit = SparseEdit(sae, form="reference")  # Eq. 3 written out: ReLU's gradient

    def scale_values(self, rows: Tensor) -> Tensor:
        codes = self.sae.encode(rows.to(self.sae.W_dec.device).float())
        return codes[codes != 0]

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
