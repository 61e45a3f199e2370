"""Facts about a model's forward that callers need before calling it.

Where inputs go (a model spread over devices with ``device_map`` takes its inputs on the
device of its embeddings, not of its first parameter), whether the forward can compute
logits for the last few positions only (``logits_to_keep``: the LM head is the largest
single cost of a small model, and its logits the largest tensor), and what the key/value
cache argument is called (``cache`` in recent transformers, ``past_key_values`` before).
"""

from __future__ import annotations

import inspect

import torch
from torch import nn


def input_device(model: nn.Module) -> torch.device:
    """The device the model's input embeddings live on (works with ``device_map``)."""
    get = getattr(model, "get_input_embeddings", None)
    embeddings = get() if callable(get) else None
    if isinstance(embeddings, nn.Module):
        for parameter in embeddings.parameters():
            return parameter.device
    return next(model.parameters()).device


def supports_logits_to_keep(model: nn.Module) -> bool:
    """Whether ``model.forward`` takes ``logits_to_keep`` (older and custom models do not)."""
    try:
        return "logits_to_keep" in inspect.signature(model.forward).parameters
    except (TypeError, ValueError):  # pragma: no cover - exotic wrappers
        return False


def cache_argument(model: nn.Module) -> str:
    """The name of a forward's key/value cache argument: ``cache`` in recent transformers,
    ``past_key_values`` before (and a deprecated alias since)."""
    try:
        names = inspect.signature(model.forward).parameters
    except (TypeError, ValueError):  # pragma: no cover - exotic wrappers
        return "past_key_values"
    return "cache" if "cache" in names else "past_key_values"
