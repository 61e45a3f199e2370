"""Loading saved vectors, and the BiPO authors' released ``.pt`` files."""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch
from safetensors.torch import load_file

from yapo.errors import YapoError
from yapo.sae.model import SAE
from yapo.vectors.base import CONFIG_FILE, VECTOR_FILE, SteeringVector, VectorMeta
from yapo.vectors.card import download_vector, is_hub_reference
from yapo.vectors.dense import DenseVector
from yapo.vectors.sparse import SparseVector, require_sae

_LAYER_IN_NAME = re.compile(r"layer[_-]?(\d+)", re.IGNORECASE)


def load_bipo_pt(path: Path, layer: int | None = None) -> DenseVector:
    """A BiPO release: a bare tensor saved with ``torch.save`` (layer from the file name)."""
    try:
        tensor = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise YapoError(f"cannot read {path} as a tensor file: {exc}") from exc
    if not isinstance(tensor, torch.Tensor):
        raise YapoError(f"{path} holds a {type(tensor).__name__}, not a bare tensor")
    tensor = tensor.detach().float().flatten()
    if layer is None:
        match = _LAYER_IN_NAME.search(path.stem)
        if not match:
            raise YapoError(
                f"cannot tell the layer of {path.name}; pass layer=... (--layer on the CLI)"
            )
        layer = int(match.group(1))
    meta = VectorMeta(method="bipo", layer=layer, d_model=tensor.numel(), model="unknown")
    meta.hyperparameters["source"] = str(path)
    return DenseVector(tensor, meta)


def load_vector(
    path: str | Path,
    *,
    sae: SAE | None = None,
    layer: int | None = None,
    strict_model: bool = True,
) -> SteeringVector:
    """Load a vector folder written by :meth:`SteeringVector.save`, or a BiPO ``.pt``.

    ``path`` may also name a Hugging Face Hub repo holding such a folder,
    ``owner/name[/folder/in/repo][@revision]`` (fetched with ``huggingface_hub``).

    A sparse vector needs its SAE: pass ``sae=`` or let the saved reference be loaded;
    either way the SAE's checksum must match the one recorded at training time.
    ``strict_model=False`` accepts models whose weights differ from the training
    model's (a fine-tuned sibling; see :mod:`yapo.models.fingerprint`).
    """
    vector = _load_vector(path, sae, layer)
    vector.strict_model = strict_model
    return vector


def _load_vector(path: str | Path, sae: SAE | None, layer: int | None) -> SteeringVector:
    name = str(path)
    path = Path(path)
    if path.is_file() and path.suffix in (".pt", ".pth"):
        return load_bipo_pt(path, layer)
    if not path.exists() and is_hub_reference(name):
        path = download_vector(name)  # owner/name[/folder][@revision] on the Hub
    if not path.exists():
        raise YapoError(f"vector not found: {path}")
    if not path.is_dir():
        raise YapoError(f"{path} is not a vector folder or a .pt file")
    config_path, vector_path = path / CONFIG_FILE, path / VECTOR_FILE
    for needed in (config_path, vector_path):
        if not needed.is_file():
            raise YapoError(f"{path} is not a vector folder: {needed.name} is missing")
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
        tensors = load_file(str(vector_path))
    except Exception as exc:
        raise YapoError(f"cannot read vector folder {path}: {exc}") from exc
    if "vector" not in tensors:
        raise YapoError(f"{vector_path} has no tensor named 'vector'")
    meta = VectorMeta.from_json(config)
    kind = config.get("kind", "dense")
    if kind == "dense":
        return DenseVector(tensors["vector"], meta)
    if kind == "sparse":
        return SparseVector(tensors["vector"], meta, require_sae(sae, meta.sae_reference))
    raise YapoError(f"{config_path}: unknown vector kind {kind!r}")
