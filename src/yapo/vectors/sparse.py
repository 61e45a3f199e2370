"""A vector in the latent space of an SAE (YaPO, SAS).

The paper's transform (Eq. 3), with ``u = d·λ·v`` and ``s = Enc(h) >= 0``::

    h' = Dec(ReLU(s + u)) + (h - Dec(s))

computed by :class:`yapo.vectors.edits.SparseEdit`, by default in its exact fast form
(the dense term and the negative latents precomputed once per ``(λ, d)`` and kept here),
or as Eq. 3 written out (:meth:`SparseVector.with_form`, the oracle of the tests).
"""

from __future__ import annotations

from typing import Any

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
from yapo.vectors.edits import SparseEdit, SparseForm, SparsePlan, scale


class SparseVector(SteeringVector):
    kind = "sparse"
    edit: SparseEdit

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
        self.edit = SparseEdit(sae, form="fast")
        self._plans: dict[tuple[Any, ...], SparsePlan] = {}

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
        return scale(self.vector, multiplier, direction).to(self.sae.W_dec.device)

    def delta(self, hidden: Tensor, multiplier: float = 1.0, direction: int = 1) -> Tensor:
        u = self.scaled(multiplier, direction)
        plan = None
        if self.edit.form == "fast":  # the plan depends only on (λ, d): kept across calls
            key = (float(multiplier), int(direction))
            plan = self._plans.get(key)
            if plan is None:
                plan = self.edit.plan(u)
                self._plans = {key: plan}
        return self.edit.delta(hidden, u, plan)

    def with_form(self, form: SparseForm) -> SparseVector:
        """A copy that computes its delta with ``form`` (``"reference"`` = plain Eq. 3)."""
        copy = SparseVector(self.vector, self.meta, self.sae)
        copy.edit = SparseEdit(self.sae, form)
        return copy

    def to_dense_equivalent(self, multiplier: float = 1.0, direction: int = 1) -> Tensor | None:
        """``u⁺·W_dec`` when ``u`` has no negative entries (then the delta is constant)."""
        plan = self.edit.plan(self.scaled(multiplier, direction))
        return None if plan.negative.numel() else plan.positive_term

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
