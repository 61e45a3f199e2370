"""yapo vectors to and from llama.cpp control vectors.

``export_llamacpp`` writes ``d·λ·v`` (a dense vector) or a measured dense stand-in of a
sparse vector (:mod:`yapo.export.linearize`) as ``direction.<L>``; llama.cpp then adds
it after block ``L`` at every position, exactly what ``vector.apply(model, λ, d,
positions="all")`` does. ``import_llamacpp`` reads such a file (or one written by
repeng / llama.cpp's ``cvector-generator``) back as a :class:`DenseVector`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from yapo.errors import YapoError
from yapo.export.linearize import Linearization
from yapo.export.llamacpp import (
    KEY_CONFIG,
    KEY_MULTIPLIER,
    MetaValue,
    llamacpp_index,
    read_control_vector,
    write_control_vector,
)
from yapo.vectors.base import SteeringVector, VectorMeta
from yapo.vectors.dense import DenseVector
from yapo.vectors.sparse import SparseVector

KEY_SOURCE_KIND = "yapo.source_kind"
KEY_LINEARIZATION = "yapo.linearization"
KEY_LINEAR_ERROR = "yapo.linearization.relative_error"
KEY_LINEAR_INFO = "yapo.linearization.summary"


@dataclass
class ExportReport:
    """What was written: the file, the llama.cpp index and, for sparse vectors, the error."""

    path: Path
    index: int
    layer: int
    scale: float
    norm: float
    linearization: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "llamacpp_direction": f"direction.{self.index}",
            "layer": self.layer,
            "scale": self.scale,
            "norm": self.norm,
            "linearization": self.linearization,
            "notes": self.notes,
        }


def _model_hint(meta: VectorMeta) -> str:
    fingerprint = meta.model_fingerprint or {}
    hint = fingerprint.get("model_type")
    return str(hint) if hint else meta.model


def export_llamacpp(
    vector: SteeringVector,
    out: str | Path,
    *,
    multiplier: float = 1.0,
    direction: int = 1,
    linearization: Linearization | None = None,
) -> ExportReport:
    """Write ``vector`` as a llama.cpp control vector (GGUF) at ``out``.

    The strength ``d·λ`` is baked into the file, so ``--control-vector FILE`` in llama.cpp
    steers like ``vector.apply(model, λ, d)``; ``--control-vector-scaled FILE:s`` multiplies
    a dense vector's strength by ``s`` (a linearized sparse one is only valid at its λ).
    A sparse vector needs a ``linearization`` made at the same (λ, d) unless its edit is
    a constant (no negative entries), and is refused otherwise with the reason.
    """
    if direction not in (-1, 1):
        raise YapoError(f"direction must be +1 or -1, got {direction!r}")
    meta = vector.meta
    num_layers = (meta.model_fingerprint or {}).get("num_layers")
    index = llamacpp_index(meta.layer, int(num_layers) if num_layers else None)
    scale = float(direction) * float(multiplier)
    extra: dict[str, MetaValue] = {
        KEY_CONFIG: json.dumps({"kind": vector.kind, **meta.to_json()}, sort_keys=True),
        KEY_MULTIPLIER: scale,
        KEY_SOURCE_KIND: vector.kind,
    }
    notes: list[str] = []
    summary: dict[str, Any] | None = None
    if isinstance(vector, SparseVector):
        if linearization is None:
            if vector.to_dense_equivalent(multiplier, direction) is None:
                raise YapoError(
                    f"this {meta.method} vector lives in SAE space: its edit "
                    "Dec(ReLU(Enc(h)+u)) - Dec(Enc(h)) depends on h wherever u = d·λ·v is "
                    "negative, and llama.cpp can only add a fixed direction. Export it with "
                    "--linearize and some representative text (the error of the dense "
                    "approximation is measured and stored), or serve it exactly with "
                    "'yapo serve'."
                )
            from yapo.export.linearize import linearize

            linearization = linearize(vector, multiplier=multiplier, direction=direction)
        if (linearization.multiplier, linearization.direction) != (float(multiplier), direction):
            raise YapoError(
                f"the linearization was made at λ={linearization.multiplier}, "
                f"d={linearization.direction}, not at λ={multiplier}, d={direction}"
            )
        values = linearization.dense.float()
        summary = linearization.summary()
        extra[KEY_LINEARIZATION] = linearization.method
        extra[KEY_LINEAR_ERROR] = linearization.relative_error
        extra[KEY_LINEAR_INFO] = json.dumps(summary, sort_keys=True)
        if linearization.method == "exact":
            notes.append("exact: the vector has no negative entries, so its edit is constant")
        else:
            notes.append(
                f"approximate ({linearization.method}): relative error "
                f"{linearization.relative_error:.3g} over {linearization.n_positions} positions; "
                f"valid only at multiplier {multiplier}"
            )
    elif isinstance(vector, DenseVector):
        values = vector.vector.float() * scale
    else:
        raise YapoError(f"cannot export a vector of kind {vector.kind!r} to llama.cpp")
    path = write_control_vector(out, {index: values}, model_hint=_model_hint(meta), metadata=extra)
    return ExportReport(
        path=path,
        index=index,
        layer=meta.layer,
        scale=scale,
        norm=float(values.norm()),
        linearization=summary,
        notes=notes,
    )


def _pick_index(directions: dict[int, Any], layer: int | None, path: Path) -> int:
    if layer is not None:
        if layer not in directions:
            raise YapoError(
                f"{path} has no direction for layer {layer}; it has {sorted(directions)}"
            )
        return layer
    nonzero = [k for k, v in directions.items() if bool((v != 0).any())]
    if len(directions) == 1:
        return int(next(iter(directions)))
    if len(nonzero) == 1:
        return int(nonzero[0])
    raise YapoError(
        f"{path} holds directions for {len(directions)} layers ({sorted(directions)}); a yapo "
        "vector steers one layer: pass layer=... (--layer on the CLI)"
    )


def import_llamacpp(path: str | Path, *, layer: int | None = None) -> DenseVector:
    """Read a llama.cpp control vector as a dense yapo vector (``direction.<k>`` → layer k).

    A file exported by yapo from a dense vector at multiplier 1 gives back the identical
    vector and metadata; otherwise the baked-in strength stays in the numbers and is
    recorded in ``hyperparameters``. Files from repeng hold one direction per layer:
    choose one with ``layer``.
    """
    path = Path(path)
    cvec = read_control_vector(path)
    index = _pick_index(cvec.directions, layer, path)
    tensor = torch.from_numpy(cvec.directions[index].copy())
    config = cvec.vector_config
    scale = cvec.metadata.get(KEY_MULTIPLIER)
    if config is not None and int(config.get("layer", -1)) == index:
        kind = config.get("kind", "dense")
        meta = VectorMeta.from_json(config)
        meta.d_model = tensor.numel()
        if kind != "dense" or scale != 1.0:
            meta.hyperparameters = {
                **meta.hyperparameters,
                "llamacpp_scale": scale,
                "source": str(path),
            }
        if kind != "dense":
            meta.method = f"{meta.method}-linearized"
            meta.hyperparameters["sae_reference"] = meta.sae_reference
            meta.hyperparameters["linearization"] = cvec.metadata.get(KEY_LINEAR_INFO)
            meta.d_sae = meta.sae_reference = meta.sae_checksum = None
        return DenseVector(tensor, meta)
    meta = VectorMeta(
        method="control-vector",
        layer=index,
        d_model=tensor.numel(),
        model=cvec.model_hint or "unknown",
        hyperparameters={
            "source": str(path),
            "format": "llama.cpp control vector",
            "model_hint": cvec.model_hint,
            "layers_in_file": sorted(cvec.directions),
        },
    )
    return DenseVector(tensor, meta)
