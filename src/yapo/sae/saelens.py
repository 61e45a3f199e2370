"""Writing an SAE in the SAELens layout (``cfg.json`` + ``sae_weights.safetensors``).

yapo's own SAE format is SAELens', so SAELens users read our SAEs and we read theirs
(reading is in :mod:`yapo.sae.formats`, with the other reference kinds). The writer is
its own module so that :meth:`SAE.save <yapo.sae.model.SAE.save>` can call it while
the readers, which build :class:`~yapo.sae.model.SAE` objects, import the model: the
SAE type is needed here for type checking only, so there is no import cycle.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from safetensors.torch import save_file
from torch import Tensor

from yapo._io import atomic_dir, write_json
from yapo._version import __version__

if TYPE_CHECKING:
    from yapo.sae.model import SAE

SAELENS_CONFIG = "cfg.json"
SAELENS_WEIGHTS = "sae_weights.safetensors"


def saelens_config(sae: SAE, dtype: torch.dtype) -> dict[str, Any]:
    """A ``cfg.json`` that SAELens (old flat keys and v6 ``metadata``) can read."""
    architecture = {"jumprelu": "jumprelu", "relu": "standard", "topk": "topk"}[sae.activation]
    meta = {k: v for k, v in sae.metadata.items() if _is_json(v)}
    cfg: dict[str, Any] = {
        "architecture": architecture,
        "d_in": sae.d_in,
        "d_sae": sae.d_sae,
        "dtype": str(dtype).removeprefix("torch."),
        "device": "cpu",
        "apply_b_dec_to_input": sae.apply_b_dec_to_input,
        "normalize_activations": "none",
        "activation_fn_str": "topk" if sae.activation == "topk" else "relu",
        "activation_fn_kwargs": {"k": sae.k} if sae.activation == "topk" else {},
        "metadata": {**meta, "yapo_version": __version__},
    }
    if sae.activation == "topk":
        cfg["k"] = sae.k
    for key in ("model_name", "hook_name", "hook_layer", "neuronpedia_id"):
        if key in meta:
            cfg[key] = meta[key]
    return cfg


def _is_json(value: Any) -> bool:
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return False
    return True


def save_saelens_folder(sae: SAE, folder: str | Path, dtype: torch.dtype = torch.float32) -> Path:
    """Write ``sae`` in the SAELens layout, atomically."""
    tensors: dict[str, Tensor] = {
        name: getattr(sae, name).detach().to("cpu", dtype).contiguous()
        for name in ("W_enc", "W_dec", "b_enc", "b_dec")
    }
    if sae.activation == "jumprelu":
        tensors["threshold"] = sae.threshold.detach().to("cpu", dtype).contiguous()
    with atomic_dir(folder) as tmp:
        save_file(tensors, str(tmp / SAELENS_WEIGHTS))
        write_json(tmp / SAELENS_CONFIG, saelens_config(sae, dtype))
    return Path(folder)
