"""Where the decoder blocks live, and what "layer L" means.

Convention (docs/design.md): layer ``L`` is the *output* of decoder block ``L`` (0-based),
which is Hugging Face ``hidden_states[L + 1]``, TransformerLens
``blocks.L.hook_resid_post`` and Gemma Scope ``layer_L``. Negative ``L`` counts from
the end, like Python indexing (``-1`` is the last block).
"""

from __future__ import annotations

from typing import Any

from torch import nn

from yapo.errors import YapoError

# Attribute paths of the decoder-block list, most specific first. Multimodal wrappers
# (Gemma 3 4B+, Llava-style) keep the text stack under ``language_model``.
_BLOCK_PATHS = (
    "model.layers",  # Llama, Mistral, Qwen2/3, Gemma 1/2/3, Phi-3, OLMo
    "model.language_model.layers",  # Gemma3ForConditionalGeneration (transformers 5)
    "language_model.model.layers",  # older multimodal wrappers
    "transformer.h",  # GPT-2, GPT-J, Falcon, Bloom
    "gpt_neox.layers",  # GPT-NeoX, Pythia
    "model.decoder.layers",  # OPT
    "transformer.blocks",  # MPT
)


def _get_path(obj: Any, path: str) -> Any:
    for name in path.split("."):
        obj = getattr(obj, name, None)
        if obj is None:
            return None
    return obj


def decoder_blocks(model: nn.Module) -> nn.ModuleList:
    """Return the model's list of decoder blocks.

    Known layouts are tried first; otherwise the largest ``nn.ModuleList`` whose length
    equals the configured number of layers is used, which covers most other Hugging
    Face causal LMs without a table entry.
    """
    for path in _BLOCK_PATHS:
        found = _get_path(model, path)
        if isinstance(found, nn.ModuleList) and len(found) > 0:
            return found
    n = _configured_layers(model)
    candidates = [m for m in model.modules() if isinstance(m, nn.ModuleList) and len(m) == n]
    if n and candidates:
        return candidates[0]
    raise YapoError(
        f"cannot find the decoder blocks of {type(model).__name__}: none of "
        f"{', '.join(_BLOCK_PATHS)} exists and no ModuleList has num_hidden_layers={n} entries"
    )


def _configured_layers(model: nn.Module) -> int:
    config = getattr(model, "config", None)
    text_config = getattr(config, "text_config", None) or config
    for key in ("num_hidden_layers", "n_layer", "num_layers"):
        value = getattr(text_config, key, None)
        if isinstance(value, int):
            return value
    return 0


def num_layers(model: nn.Module) -> int:
    """Number of decoder blocks."""
    return len(decoder_blocks(model))


def resolve_layer(model_or_num_layers: nn.Module | int, layer: int) -> int:
    """Turn a possibly negative layer index into a 0-based block index, or fail clearly."""
    n = (
        model_or_num_layers
        if isinstance(model_or_num_layers, int)
        else num_layers(model_or_num_layers)
    )
    if not isinstance(layer, int) or isinstance(layer, bool):
        raise YapoError(f"layer must be an integer, got {layer!r}")
    if not -n <= layer < n:
        raise YapoError(
            f"layer {layer} is out of range: this model has {n} decoder blocks, "
            f"so valid layers are 0..{n - 1} (or -{n}..-1 counting from the end)"
        )
    return layer % n


def hidden_size(model: nn.Module) -> int:
    """Width of the residual stream (d_model)."""
    config = getattr(model, "config", None)
    text_config = getattr(config, "text_config", None) or config
    for key in ("hidden_size", "n_embd", "d_model"):
        value = getattr(text_config, key, None)
        if isinstance(value, int):
            return value
    raise YapoError(f"cannot tell the hidden size of {type(model).__name__} from its config")
