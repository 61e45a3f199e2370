"""A dense residual-stream vector (BiPO, CAA): ``h' = h + d·λ·v``.

The edit is :class:`yapo.vectors.edits.DenseEdit`, the one the trainer used; the cast
``u`` is kept for the last (device, dtype, λ, d), since every token of a call adds it.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from yapo._finite import check_finite
from yapo.errors import YapoError
from yapo.models.fingerprint import model_fingerprint
from yapo.models.layers import hidden_size, resolve_layer
from yapo.models.loading import model_name
from yapo.vectors.base import SteeringVector, VectorMeta
from yapo.vectors.edits import DenseEdit, scale


class DenseVector(SteeringVector):
    kind = "dense"
    edit: DenseEdit

    def __init__(self, vector: Tensor, meta: VectorMeta) -> None:
        if vector.ndim != 1:
            raise YapoError(f"a dense vector must be 1-D, got shape {tuple(vector.shape)}")
        if vector.numel() != meta.d_model:
            raise YapoError(f"vector has {vector.numel()} entries but d_model={meta.d_model}")
        self.vector = vector.detach().to(torch.float32)
        check_finite(self.vector, f"the {meta.method} vector")  # a diverged run's: refused
        self.meta = meta
        self.edit = DenseEdit()
        self._cache: dict[tuple[Any, ...], Tensor] = {}

    @classmethod
    def create(
        cls,
        vector: Tensor,
        model: nn.Module,
        layer: int,
        method: str = "dense",
        hyperparameters: dict[str, Any] | None = None,
    ) -> DenseVector:
        """Wrap a tensor as a vector for ``model`` at ``layer`` (metadata filled in)."""
        meta = VectorMeta(
            method=method,
            layer=resolve_layer(model, layer),
            d_model=hidden_size(model),
            model=model_name(model),  # type: ignore[arg-type]
            model_fingerprint=model_fingerprint(model),
            hyperparameters=dict(hyperparameters or {}),
        )
        return cls(vector, meta)

    def delta(self, hidden: Tensor, multiplier: float = 1.0, direction: int = 1) -> Tensor:
        key = (hidden.device, hidden.dtype, float(multiplier), int(direction))
        cached = self._cache.get(key)
        if cached is None:
            cached = self.edit.delta(hidden, scale(self.vector, multiplier, direction))
            self._cache = {key: cached}  # one entry: multipliers change during sweeps
        return cached
