"""Which weights a model has, cheaply: a few fixed slices of its parameters.

A vector's ``model_fingerprint`` used to hold only the architecture and sizes, so a
vector trained on one model was accepted by any other model of the same shape. The
weight fingerprint adds 32 numbers read at fixed places (rows spread over the input
embedding, and the start of the last block's first weight) and a digest of them
rounded to bfloat16. Reading them costs nothing next to loading the model.

Matching (:func:`weights_problem`):

* same digest: the same weights (in float32, bfloat16 or float16 alike);
* otherwise the relative difference of the samples decides: below
  :data:`TOLERANCE` the model is the same weights in another precision or a light
  quantization and is accepted; above it, it is another model (or a heavily changed
  fine-tune) and the vector is refused unless the user says it is a sibling
  (``strict_model=False``, ``--allow-other-model``, ``YAPO_ALLOW_OTHER_MODEL=1``).

Models whose weights cannot be read here (meta/offloaded tensors, integer-packed
quantization) get no weight fingerprint, and the check falls back to the shapes.
:func:`model_fingerprint` is the whole record a vector keeps: the architecture and its
sizes (from :mod:`yapo.models.layers`) plus this weight fingerprint.
"""

from __future__ import annotations

import hashlib
import math
import os
from typing import Any

import torch
from torch import Tensor, nn

from yapo.models.layers import decoder_blocks, hidden_size, num_layers

TOLERANCE = 0.1
ALLOW_ENV = "YAPO_ALLOW_OTHER_MODEL"
_ROWS = 6
_COLUMNS = 4
_BLOCK_VALUES = 8


def weight_sample(model: nn.Module) -> list[float] | None:
    """32 float values at fixed places of the weights, or ``None`` when unreadable."""
    try:
        embedding = model.get_input_embeddings().weight  # type: ignore[operator]
        block = next(decoder_blocks(model)[-1].parameters())
    except Exception:
        return None
    values: list[Tensor] = []
    for tensor in (embedding, block):
        if tensor.device.type == "meta" or not tensor.is_floating_point() or tensor.ndim != 2:
            return None
    rows = embedding.shape[0]
    picks = [(rows * (k + 1)) // (_ROWS + 1) for k in range(_ROWS)]
    with torch.no_grad():
        values.append(embedding[picks, :_COLUMNS].flatten())
        values.append(block.flatten()[:_BLOCK_VALUES])
        sample = torch.cat([v.detach().float().cpu() for v in values])
    numbers = [float(x) for x in sample]
    if not all(math.isfinite(x) for x in numbers):
        return None
    return numbers


def sample_digest(sample: list[float]) -> str:
    """SHA-256 (first 16 hex digits) of the sample rounded to bfloat16."""
    rounded = torch.tensor(sample, dtype=torch.float32).to(torch.bfloat16).float()
    return hashlib.sha256(rounded.numpy().tobytes()).hexdigest()[:16]


def weight_fingerprint(model: nn.Module) -> dict[str, Any]:
    """``{"weights": digest, "weights_sample": [...]}``, or ``{}`` when unreadable."""
    sample = weight_sample(model)
    if sample is None:
        return {}
    return {"weights": sample_digest(sample), "weights_sample": [round(x, 6) for x in sample]}


def weights_problem(saved: dict[str, Any], current: dict[str, Any]) -> str | None:
    """Why the saved fingerprint's weights are not this model's, or ``None``."""
    if not saved.get("weights") or not current.get("weights"):
        return None  # an older vector, or weights that cannot be read: shapes only
    if saved["weights"] == current["weights"]:
        return None
    a, b = saved.get("weights_sample"), current.get("weights_sample")
    if not isinstance(a, list) or not isinstance(b, list) or len(a) != len(b):
        return f"weight digest {saved['weights']} vs {current['weights']}"
    difference = math.sqrt(sum((float(x) - float(y)) ** 2 for x, y in zip(a, b)))
    scale = max(math.sqrt(sum(float(x) ** 2 for x in a)), 1e-12)
    relative = difference / scale
    if relative < TOLERANCE:
        return None  # the same weights in another precision / a light quantization
    return (
        f"its sampled weights differ by {relative:.0%} "
        f"(digest {saved['weights']} vs {current['weights']})"
    )


def other_model_allowed() -> bool:
    """``YAPO_ALLOW_OTHER_MODEL=1`` (or true/yes): accept vectors from sibling models."""
    return os.environ.get(ALLOW_ENV, "").strip().lower() in ("1", "true", "yes", "on")


def model_fingerprint(model: nn.Module) -> dict[str, Any]:
    """What must match for a vector trained on one model to be applied to another.

    The name a model was loaded under varies (Hub id, local copy, GGUF), so fit is
    judged on the architecture and its sizes, and on a sample of the weights
    (:func:`weight_fingerprint`), with the name kept for messages.
    """
    config = getattr(model, "config", None)
    text_config = getattr(config, "text_config", None) or config
    return {
        "model_type": str(getattr(text_config, "model_type", "unknown")),
        "hidden_size": hidden_size(model),
        "num_layers": num_layers(model),
        "vocab_size": int(getattr(text_config, "vocab_size", 0) or 0),
        **weight_fingerprint(model),
    }
