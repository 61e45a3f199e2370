"""Every steering edit, written once: what a vector does to the residual stream ``h``.

The trainer (:mod:`yapo.methods.steering`) and the vectors used at inference
(:mod:`yapo.vectors.dense`, :mod:`yapo.vectors.sparse`) both compute ``h' - h`` here, so
a trained vector changes the stream exactly as it did while it was trained. With
``u = d·λ·v`` (:func:`scale`):

* **dense** (BiPO, CAA): ``h' = h + u``;
* **sparse** (YaPO, SAS), paper Eq. 3 with ``s = Enc(h)``:
  ``h' = Dec(ReLU(s + u)) + (h - Dec(s))``, computed three ways that agree exactly:

  - :func:`sparse_delta_reference` — Eq. 3 written out, the full SAE round trip at every
    token: the oracle of the tests, and the trainer's ``--no-cache`` path;
  - :func:`sparse_delta` — inference's fast form (docs/design.md, "The sparse
    identity"): ``u⁺·W_dec - Σ_{i: u_i<0} min(s_i, -u_i)·W_dec[i]``, the dense term and
    the negative latents precomputed once per ``u`` (:class:`SparsePlan`), the encoder
    run on the negative latents only;
  - :func:`sparse_delta_cached` — the trainer's form from cached codes of the latents
    active anywhere in the batch: ``(ReLU(s + u) - s)·W_dec`` on those, one dense term
    ``ReLU(u)·W_dec`` for the latents silent in the whole batch.

  The trainer's two forms use ReLU, not the equal ``min``: ReLU's gradient
  ``1[s + u > 0]`` is zero for a silent latent (``s = 0``) whose ``u_i`` is zero, so a
  latent that never fires never moves away from zero. The fast form runs without
  gradients, where the two are the same number.

RePS's null intervention ``Φ_Null`` (:mod:`yapo.methods.objectives`) removes ``v``'s
direction instead of adding it: dense ``Φ_Null(h) = h - ReLU(h·v)/‖v‖²·v``
(:func:`dense_null_delta`, AxBench's form), sparse the same in code space through Eq. 3
with the per-position ``u_t = -ReLU(s_t·v)/‖v‖²·v`` (:func:`sparse_null_delta_reference`
live, :func:`sparse_null_delta_cached` from cached codes). At ``v = 0`` both are the
identity.

Each :class:`Edit` bundles one space's formulas, so trainer and vector hold the same
object. SAE maths runs in float32; a delta is returned in its states' dtype and device.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Literal, Protocol

import torch
from torch import Tensor

from yapo.errors import YapoError
from yapo.sae.model import SAE

SparseForm = Literal["fast", "reference"]
NULL_EPS = 1e-30  # ‖v‖² below this counts as v = 0 (then Φ_Null is the identity)


class CachedCodes(Protocol):
    """A batch's SAE codes on the latents active anywhere in it
    (:class:`yapo.methods.batches.BatchCodes`): ``dense[row*seq + pos, j]`` is the code of
    latent ``active[j]``."""

    active: Tensor  # (a,) latent ids
    dense: Tensor  # (rows*seq, a) float32
    active_mask: Tensor  # (d_sae,) bool


def scale(vector: Tensor, multiplier: float, direction: float) -> Tensor:
    """``u = d·λ·v`` (RePS passes its steering factor ``α`` as ``d``)."""
    return vector * (float(direction) * float(multiplier))


def cast_like(delta: Tensor, states: Tensor) -> Tensor:
    """``delta`` in ``states``' dtype and device, ready to be added to them."""
    return delta.to(device=states.device, dtype=states.dtype)


# ---------------------------------------------------------------- sparse: steering
def _eq3_from_codes(sae: SAE, codes: Tensor, u: Tensor) -> Tensor:
    """``Dec(ReLU(s + u)) - Dec(s)``: Eq. 3's change, for codes ``s`` already encoded."""
    return sae.decode(torch.relu(codes + u)) - sae.decode(codes)


def sparse_delta_reference(sae: SAE, hidden: Tensor, u: Tensor) -> Tensor:
    """Eq. 3 as written: ``Dec(ReLU(Enc(h) + u)) - Dec(Enc(h))`` (float32)."""
    return _eq3_from_codes(sae, sae.encode(hidden), u)


class SparsePlan:
    """What the fast form precomputes for one ``u``: the dense term and the negative latents."""

    def __init__(self, sae: SAE, u: Tensor) -> None:
        self.positive_term = torch.relu(u) @ sae.W_dec  # (d_in,)
        self.negative = torch.nonzero(u < 0).flatten()
        self.negative_size = -u[self.negative]  # -u_i > 0
        self.negative_rows = sae.W_dec[self.negative]  # (n_neg, d_in)


def sparse_delta(sae: SAE, hidden: Tensor, u: Tensor, plan: SparsePlan | None = None) -> Tensor:
    """The exact fast form of Eq. 3's change ``h' - h`` (float32)."""
    plan = plan or SparsePlan(sae, u)
    delta = plan.positive_term
    if plan.negative.numel():
        codes = sae.encode_latents(hidden, plan.negative)  # (..., n_neg)
        removed = torch.minimum(codes, plan.negative_size)
        delta = delta - removed @ plan.negative_rows
    return delta


def _active_change(w_dec: Tensor, codes: CachedCodes, u_active: Tensor) -> Tensor:
    """``(ReLU(s + u) - s)·W_dec`` on the active latents, per cached position."""
    s = codes.dense
    return (torch.relu(s + u_active) - s) @ w_dec[codes.active]


def _silent_term(w_dec: Tensor, codes: CachedCodes, u: Tensor) -> Tensor:
    """``ReLU(u)·W_dec`` over the latents silent in the whole batch (``s = 0`` there,
    so ``ReLU(0 + u) - 0`` is the same at every position: one dense vector)."""
    return torch.relu(u).masked_fill(codes.active_mask, 0.0) @ w_dec


def sparse_delta_cached(sae: SAE, codes: CachedCodes, u: Tensor) -> Tensor:
    """Eq. 3's change from cached codes, ``(rows*seq, d_in)`` float32 (ReLU form)."""
    w_dec = sae.W_dec
    return _active_change(w_dec, codes, u[codes.active]) + _silent_term(w_dec, codes, u)


# ---------------------------------------------------------------- RePS null edits
def null_coefficient(projection: Tensor, vector: Tensor) -> Tensor:
    """``ReLU(x·v)/‖v‖²`` from the projections ``x·v`` (float32); ``‖v‖²`` is clamped
    away from zero, so at ``v = 0`` the coefficient, and ``Φ_Null``'s change, is 0."""
    return torch.relu(projection) / (vector @ vector).clamp_min(NULL_EPS)


def dense_null_delta(hidden: Tensor, vector: Tensor) -> Tensor:
    """``Φ_Null(h) - h = -ReLU(h·v)/‖v‖²·v`` in ``R^{d_model}``, in ``hidden``'s dtype."""
    h = hidden.float()
    v = vector.to(h.device)
    delta = -null_coefficient(h @ v, v).unsqueeze(-1) * v
    return delta.to(hidden.dtype)


def sparse_null_delta_reference(sae: SAE, hidden: Tensor, vector: Tensor) -> Tensor:
    """Sparse ``Φ_Null(h) - h`` through the full SAE round trip (float32)."""
    codes = sae.encode(hidden.to(sae.W_dec.device))
    v = vector.to(codes.device)
    u = -null_coefficient(codes @ v, v).unsqueeze(-1) * v
    return _eq3_from_codes(sae, codes, u)


def sparse_null_delta_cached(sae: SAE, codes: CachedCodes, vector: Tensor) -> Tensor:
    """Sparse ``Φ_Null(h) - h`` from cached codes, ``(rows*seq, d_in)`` float32.

    ``s·v`` needs only the active latents (the others are 0 in ``s``); on a silent latent
    ``ReLU(0 - c_t·v_i) = c_t·ReLU(-v_i)``, one dense vector times the coefficient ``c_t``.
    """
    w_dec = sae.W_dec
    v = vector.to(w_dec.device)
    v_active = v[codes.active]
    coefficient = null_coefficient(codes.dense @ v_active, v)  # c_t >= 0
    active = _active_change(w_dec, codes, -coefficient.unsqueeze(-1) * v_active)
    return active + coefficient.unsqueeze(-1) * _silent_term(w_dec, codes, -v)


# ---------------------------------------------------------------- edits
class Edit(ABC):
    """One vector space's edits: ``h' - h`` for ``u = d·λ·v`` and RePS's ``Φ_Null``,
    from live states and from the trainer's cache, each in the states' dtype and device."""

    @abstractmethod
    def delta(self, hidden: Tensor, u: Tensor) -> Tensor:
        """``h' - h`` for live hidden states ``(..., d_model)``."""

    @abstractmethod
    def cached_delta(self, states: Tensor, codes: CachedCodes | None, u: Tensor) -> Tensor:
        """``h' - h`` for cached states ``(rows, seq, d_model)``, broadcastable to them."""

    @abstractmethod
    def null_delta(self, hidden: Tensor, vector: Tensor) -> Tensor:
        """``Φ_Null(h) - h`` for live hidden states."""

    @abstractmethod
    def cached_null_delta(
        self, states: Tensor, codes: CachedCodes | None, vector: Tensor
    ) -> Tensor:
        """``Φ_Null(h) - h`` for cached states ``(rows, seq, d_model)``."""


class DenseEdit(Edit):
    """``h' = h + u``: the change does not depend on ``h``, cached or live."""

    def delta(self, hidden: Tensor, u: Tensor) -> Tensor:
        return cast_like(u, hidden)

    def cached_delta(self, states: Tensor, codes: CachedCodes | None, u: Tensor) -> Tensor:
        return self.delta(states, u)

    def null_delta(self, hidden: Tensor, vector: Tensor) -> Tensor:
        return dense_null_delta(hidden, vector)

    def cached_null_delta(
        self, states: Tensor, codes: CachedCodes | None, vector: Tensor
    ) -> Tensor:
        return dense_null_delta(states, vector)  # needs only h, cached or live


class SparseEdit(Edit):
    """Eq. 3 through ``sae``; live states use ``form`` (``"fast"`` at inference,
    ``"reference"`` — Eq. 3 written out, with ReLU's gradient — in the trainer)."""

    def __init__(self, sae: SAE, form: SparseForm = "fast") -> None:
        if form not in ("fast", "reference"):
            raise YapoError(f"unknown sparse form {form!r}; use 'fast' or 'reference'")
        self.sae = sae
        self.form: SparseForm = form

    def plan(self, u: Tensor) -> SparsePlan:
        """The fast form's precomputation for ``u`` (no gradient: inference only)."""
        with torch.no_grad():
            return SparsePlan(self.sae, u.to(self.sae.W_dec.device))

    def delta(self, hidden: Tensor, u: Tensor, plan: SparsePlan | None = None) -> Tensor:
        u = u.to(self.sae.W_dec.device)
        if self.form == "reference":
            change = sparse_delta_reference(self.sae, hidden, u)
        else:
            change = sparse_delta(self.sae, hidden, u, plan)
        return cast_like(change, hidden)

    def cached_delta(self, states: Tensor, codes: CachedCodes | None, u: Tensor) -> Tensor:
        codes = _require_codes(codes)
        change = sparse_delta_cached(self.sae, codes, u.to(self.sae.W_dec.device))
        return cast_like(change.view(int(states.shape[0]), int(states.shape[1]), -1), states)

    def null_delta(self, hidden: Tensor, vector: Tensor) -> Tensor:
        return cast_like(sparse_null_delta_reference(self.sae, hidden, vector), hidden)

    def cached_null_delta(
        self, states: Tensor, codes: CachedCodes | None, vector: Tensor
    ) -> Tensor:
        change = sparse_null_delta_cached(self.sae, _require_codes(codes), vector)
        return cast_like(change.view(int(states.shape[0]), int(states.shape[1]), -1), states)


def _require_codes(codes: CachedCodes | None) -> CachedCodes:
    if codes is None:
        raise ValueError("the sparse fast path needs the batch's SAE codes")
    return codes
