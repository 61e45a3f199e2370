"""A vector in the latent space of an SAE (YaPO, SAS).

The paper's transform (Eq. 3), with ``u = d·λ·v`` and ``s = Enc(h) >= 0``::

    h' = Dec(ReLU(s + u)) + (h - Dec(s))

Because Dec is affine and ``s >= 0``, ``ReLU(s + u) - s`` is ``u_i`` where ``u_i >= 0`` and
``-min(s_i, -u_i)`` where ``u_i < 0``, so (docs/design.md, "The sparse identity")::

    h' = h + u⁺·W_dec - Σ_{i: u_i<0} min(s_i, -u_i)·W_dec[i]

The first term is one dense vector per (v, d, λ), computed once; the second needs the
encoder only on the latents where ``u`` is negative. Only a TopK SAE, whose code
depends on every latent, needs the full encode. :func:`sparse_delta_reference` is the
straightforward Eq. 3, kept as the oracle in tests and for benchmarks.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from torch import Tensor, nn

from yapo._finite import check_finite
from yapo._paths import resolved_reference
from yapo.errors import MismatchError, YapoError
from yapo.models.fingerprint import model_fingerprint
from yapo.models.layers import hidden_size, resolve_layer
from yapo.models.loading import model_name
from yapo.sae.formats import check_sae_fits_model
from yapo.sae.model import SAE
from yapo.vectors.base import SteeringVector, VectorMeta

SparseForm = Literal["fast", "reference"]


def sparse_delta_reference(sae: SAE, hidden: Tensor, u: Tensor) -> Tensor:
    """Eq. 3 as written: ``Dec(ReLU(Enc(h) + u)) - Dec(Enc(h))`` (float32)."""
    codes = sae.encode(hidden)
    return sae.decode(torch.relu(codes + u)) - sae.decode(codes)


class _SparsePlan:
    """What the fast form precomputes for one ``u``: the dense term and the negative latents."""

    def __init__(self, sae: SAE, u: Tensor) -> None:
        self.positive_term = torch.relu(u) @ sae.W_dec  # (d_in,)
        self.negative = torch.nonzero(u < 0).flatten()
        self.negative_size = -u[self.negative]  # -u_i > 0
        self.negative_rows = sae.W_dec[self.negative]  # (n_neg, d_in)


def sparse_delta(sae: SAE, hidden: Tensor, u: Tensor, plan: _SparsePlan | None = None) -> Tensor:
    """The exact fast form of Eq. 3's change ``h' - h`` (float32)."""
    plan = plan or _SparsePlan(sae, u)
    delta = plan.positive_term
    if plan.negative.numel():
        codes = sae.encode_latents(hidden, plan.negative)  # (..., n_neg)
        removed = torch.minimum(codes, plan.negative_size)
        delta = delta - removed @ plan.negative_rows
    return delta


class SparseVector(SteeringVector):
    kind = "sparse"

    def __init__(self, vector: Tensor, meta: VectorMeta, sae: SAE) -> None:
        if vector.ndim != 1 or vector.numel() != sae.d_sae:
            raise MismatchError(
                f"a sparse vector for this SAE needs {sae.d_sae} entries, got shape "
                f"{tuple(vector.shape)}"
            )
        if meta.sae_checksum and meta.sae_checksum != sae.checksum():
            raise MismatchError(
                f"this vector was trained through SAE {meta.sae_reference} "
                f"(checksum {meta.sae_checksum}) but the given SAE "
                f"{sae.reference} has checksum {sae.checksum()}: its latents mean other things"
            )
        if sae.d_in != meta.d_model:
            raise MismatchError(f"SAE d_in={sae.d_in} but the vector's d_model={meta.d_model}")
        self.vector = vector.detach().to(torch.float32)
        check_finite(self.vector, f"the {meta.method} vector")  # a diverged run's: refused
        self.meta = meta
        self.sae = sae
        self.form: SparseForm = "fast"
        self._plans: dict[tuple[Any, ...], _SparsePlan] = {}

    @classmethod
    def create(
        cls,
        vector: Tensor,
        model: nn.Module,
        layer: int,
        sae: SAE,
        method: str = "sparse",
        hyperparameters: dict[str, Any] | None = None,
    ) -> SparseVector:
        """Wrap a latent-space tensor as a vector for ``model`` at ``layer`` through ``sae``."""
        check_sae_fits_model(sae, model)
        meta = VectorMeta(
            method=method,
            layer=resolve_layer(model, layer),
            d_model=hidden_size(model),
            model=model_name(model),  # type: ignore[arg-type]
            model_fingerprint=model_fingerprint(model),
            d_sae=sae.d_sae,
            sae_reference=resolved_reference(sae.reference),  # loadable from any directory
            sae_checksum=sae.checksum(),
            hyperparameters=dict(hyperparameters or {}),
        )
        return cls(vector, meta, sae)

    def check_fits(self, model: nn.Module) -> None:
        super().check_fits(model)
        check_sae_fits_model(self.sae, model)

    def scaled(self, multiplier: float, direction: int) -> Tensor:
        """``u = d·λ·v`` on the SAE's device, float32."""
        return (self.vector * (float(direction) * float(multiplier))).to(self.sae.W_dec.device)

    def delta(self, hidden: Tensor, multiplier: float = 1.0, direction: int = 1) -> Tensor:
        u = self.scaled(multiplier, direction)
        if self.form == "reference":
            change = sparse_delta_reference(self.sae, hidden, u)
        elif self.form == "fast":
            key = (float(multiplier), int(direction))
            plan = self._plans.get(key)
            if plan is None:
                with torch.no_grad():
                    plan = _SparsePlan(self.sae, u)
                self._plans = {key: plan}
            change = sparse_delta(self.sae, hidden, u, plan)
        else:
            raise YapoError(f"unknown sparse form {self.form!r}; use 'fast' or 'reference'")
        return change.to(device=hidden.device, dtype=hidden.dtype)

    def with_form(self, form: SparseForm) -> SparseVector:
        """A copy that computes its delta with ``form`` (``"reference"`` = plain Eq. 3)."""
        copy = SparseVector(self.vector, self.meta, self.sae)
        copy.form = form
        return copy

    def to_dense_equivalent(self, multiplier: float = 1.0, direction: int = 1) -> Tensor | None:
        """``u⁺·W_dec`` when ``u`` has no negative entries (then the delta is constant)."""
        u = self.scaled(multiplier, direction)
        if bool((u < 0).any()):
            return None
        return (torch.relu(u) @ self.sae.W_dec).detach()

    def _extra_tensors(self) -> dict[str, Tensor]:
        return {}

    @property
    def nonzero(self) -> int:
        return int((self.vector != 0).sum())


def require_sae(sae: SAE | None, reference: str | None) -> SAE:
    if sae is not None:
        return sae
    if not reference:
        raise YapoError("this sparse vector names no SAE; pass sae=... to load it")
    from yapo.sae.formats import load_sae

    return load_sae(reference)
