"""The default steering layer of the embedded model, read from the packaged SAE.

The shipped SAE encodes the output of block 14 of Gemma 3 270M (18 blocks), the layer
activation patching points to (the country information reaches the last token over
layers 12-15; see the SAE's model card), as the YaPO paper chose layer 15 of 26 for
Gemma-2-2B. The packaged ``cfg.json`` records the layer (``hook_layer``); this module reads it so
that code using the default model steers where the default SAE can encode.
"""

from __future__ import annotations

import json

from yapo.sae.formats import default_sae_folder
from yapo.sae.saelens import SAELENS_CONFIG

FALLBACK_LAYER = 14  # the shipped SAE's layer, should its cfg.json be unreadable


def _read_default_layer() -> int:
    path = default_sae_folder() / SAELENS_CONFIG
    try:
        cfg = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return FALLBACK_LAYER
    value = cfg.get("hook_layer", (cfg.get("metadata") or {}).get("hook_layer"))
    return int(value) if value is not None else FALLBACK_LAYER


DEFAULT_LAYER: int = _read_default_layer()
