"""llama.cpp control vectors: GGUF files of architecture ``controlvector``.

The format (written by llama.cpp's ``cvector-generator``, repeng and EasySteer, read by
``llama-cli``/``llama-server --control-vector[-scaled]``) is one 1-D F32 tensor
``direction.<k>`` per block plus two metadata keys, ``controlvector.model_hint`` (the
model family) and ``controlvector.layer_count`` (how many directions the file holds).

**Which block ``direction.<k>`` steers** — read from llama.cpp's source, not assumed:
its loader (``common_control_vector_load_one``) rejects ``k = 0`` and stores
``direction.<k>`` at offset ``n_embd·(k-1)`` of a flat buffer; the adapter
(``llama_adapter_cvec::apply``) fills the tensor of graph layer ``il`` (for ``il >= 1``)
from offset ``n_embd·(il-1)``; and every model graph calls ``build_cvec(cur, il)`` right
after block ``il``'s feed-forward residual add, i.e. on the output of block ``il``. The
two ``-1`` cancel, so ``direction.<k>`` is added to the output of 0-based block ``k`` at
every position — exactly yapo's layer ``k`` (HF ``hidden_states[k + 1]``). repeng uses
the same convention (it reads ``hidden_states[layer + 1]`` and writes
``direction.<layer>``). Block 0's output cannot be steered by llama.cpp at all.

llama.cpp ignores every metadata key; yapo adds its own under ``yapo.*`` (the vector's
``config.json``, the multiplier baked in, the linearization error of a sparse vector)
so that ``yapo import`` restores the vector it came from.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from yapo._io import atomic_path
from yapo._version import __version__
from yapo.errors import YapoError

ARCH = "controlvector"
KEY_MODEL_HINT = f"{ARCH}.model_hint"
KEY_LAYER_COUNT = f"{ARCH}.layer_count"
KEY_CONFIG = "yapo.vector_config"
KEY_MULTIPLIER = "yapo.multiplier"
KEY_CONVENTION = "yapo.layer_convention"
KEY_VERSION = "yapo.version"
CONVENTION = (
    "direction.<k> is added to the output of 0-based decoder block k (HF hidden_states[k+1]), "
    "which is yapo layer k"
)
MetaValue = str | int | float


def llamacpp_index(layer: int, num_layers: int | None = None) -> int:
    """llama.cpp's ``direction.<k>`` index for yapo layer ``layer`` (0-based block output).

    The mapping is the identity (see the module docstring); layer 0 is refused because
    llama.cpp never adds a control vector after block 0.
    """
    if num_layers is not None and not 0 <= layer < num_layers:
        raise YapoError(f"layer {layer} is outside this model's blocks 0..{num_layers - 1}")
    if layer < 0:
        raise YapoError(f"layer must be resolved to a 0-based block first, got {layer}")
    if layer == 0:
        raise YapoError(
            "llama.cpp cannot steer layer 0 (the output of the first block): its control "
            "vectors start at direction.1 = output of block 1. Train the vector at a layer >= 1."
        )
    return layer


@dataclass
class ControlVectorFile:
    """What a control-vector GGUF holds: ``directions[k]`` is added after block ``k``."""

    directions: dict[int, np.ndarray]
    model_hint: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def n_embd(self) -> int:
        return int(next(iter(self.directions.values())).size)

    @property
    def vector_config(self) -> dict[str, Any] | None:
        """The yapo ``config.json`` of the vector this file was exported from, if any."""
        raw = self.metadata.get(KEY_CONFIG)
        if not isinstance(raw, str):
            return None
        try:
            data = json.loads(raw)
        except json.JSONDecodeError:
            return None
        return data if isinstance(data, dict) else None


def write_control_vector(
    path: str | Path,
    directions: Mapping[int, Tensor | np.ndarray],
    *,
    model_hint: str,
    metadata: Mapping[str, MetaValue] | None = None,
) -> Path:
    """Write ``directions`` (llama.cpp index → vector) as a control-vector GGUF, atomically."""
    import gguf

    if not directions:
        raise YapoError("a control vector needs at least one direction")
    arrays: dict[int, np.ndarray] = {}
    for index, values in sorted(directions.items()):
        if index < 1:
            raise YapoError(f"direction.{index} is not allowed: llama.cpp indices start at 1")
        tensor = values if isinstance(values, Tensor) else torch.from_numpy(np.asarray(values))
        array = tensor.detach().to(torch.float32).cpu().numpy().reshape(-1)
        if not np.isfinite(array).all():
            raise YapoError(f"direction.{index} has non-finite entries")
        arrays[index] = np.ascontiguousarray(array)
    sizes = {a.size for a in arrays.values()}
    if len(sizes) != 1:
        raise YapoError(f"all directions must have the same size, got {sorted(sizes)}")
    target = Path(path)
    with atomic_path(target) as tmp:
        writer = gguf.GGUFWriter(str(tmp), ARCH)
        writer.add_string(KEY_MODEL_HINT, model_hint)
        writer.add_uint32(KEY_LAYER_COUNT, len(arrays))
        writer.add_string(KEY_VERSION, __version__)
        writer.add_string(KEY_CONVENTION, CONVENTION)
        for key, value in (metadata or {}).items():
            if isinstance(value, bool) or not isinstance(value, str | int | float):
                raise YapoError(f"metadata {key!r} must be a string or a number")
            if isinstance(value, str):
                writer.add_string(key, value)
            elif isinstance(value, int):
                writer.add_int64(key, value)
            else:
                writer.add_float64(key, value)
        for index, array in arrays.items():
            writer.add_tensor(f"direction.{index}", array)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
    return target


def _field_value(reader_field: Any) -> Any:
    try:
        return reader_field.contents()
    except Exception:  # an exotic field type: keep going without it
        return None


def read_control_vector(path: str | Path) -> ControlVectorFile:
    """Read a control-vector GGUF (yapo's, repeng's, llama.cpp's) with the ``gguf`` package."""
    import gguf

    path = Path(path)
    if not path.is_file():
        raise YapoError(f"control-vector file not found: {path}")
    try:
        reader = gguf.GGUFReader(str(path))
    except Exception as exc:
        raise YapoError(f"cannot read {path} as a GGUF file: {exc}") from exc
    metadata = {
        name: _field_value(f) for name, f in reader.fields.items() if not name.startswith("GGUF.")
    }
    arch = metadata.get("general.architecture")
    if arch is not None and arch != ARCH:
        raise YapoError(
            f"{path} is a GGUF of architecture {arch!r}, not a control vector ({ARCH!r}); "
            "is it a model file?"
        )
    directions: dict[int, np.ndarray] = {}
    for tensor in reader.tensors:
        prefix, _, suffix = tensor.name.partition(".")
        if prefix != "direction" or not suffix.isdigit():
            raise YapoError(f"{path}: unexpected tensor {tensor.name!r} (want direction.<k>)")
        if tensor.tensor_type != gguf.GGMLQuantizationType.F32:
            raise YapoError(f"{path}: {tensor.name} is {tensor.tensor_type.name}, not F32")
        data = np.array(tensor.data, dtype=np.float32).reshape(-1)
        if data.size != int(np.prod(tensor.shape)) or len(tensor.shape) != 1:
            raise YapoError(f"{path}: {tensor.name} is not 1-D (shape {list(tensor.shape)})")
        index = int(suffix)
        if index == 0:
            raise YapoError(f"{path}: direction.0 is invalid (llama.cpp refuses it too)")
        # llama.cpp sums repeated indices ("multiple directions for the same layer").
        directions[index] = directions[index] + data if index in directions else data
    if not directions:
        raise YapoError(f"{path} holds no direction tensors")
    if len({d.size for d in directions.values()}) != 1:
        raise YapoError(f"{path}: direction tensors have different sizes")
    hint = metadata.get(KEY_MODEL_HINT)
    return ControlVectorFile(
        directions=directions,
        model_hint=hint if isinstance(hint, str) else None,
        metadata=metadata,
    )


def llamacpp_buffer(cvec: ControlVectorFile, num_layers: int, strength: float = 1.0) -> np.ndarray:
    """The flat buffer llama.cpp builds from a file: block ``k``'s direction at ``n·(k-1)``.

    This is what ``llama_apply_adapter_cvec`` expects (``n_embd × (n_layer-1)`` floats,
    starting at layer 1), so a caller of llama.cpp's C API can pass it unchanged.
    """
    n = cvec.n_embd
    buffer = np.zeros(n * (num_layers - 1), dtype=np.float32)
    for index, values in cvec.directions.items():
        if index >= num_layers:
            raise YapoError(f"direction.{index} does not exist in a model with {num_layers} blocks")
        buffer[n * (index - 1) : n * index] += values * strength
    return buffer
