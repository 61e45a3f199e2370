"""Loading causal LMs by the names users give them, and finding their decoder blocks."""

from yapo.models.fingerprint import model_fingerprint
from yapo.models.layers import decoder_blocks, num_layers, resolve_layer
from yapo.models.loading import DEFAULT_MODEL, load_model

__all__ = [
    "DEFAULT_MODEL",
    "decoder_blocks",
    "load_model",
    "model_fingerprint",
    "num_layers",
    "resolve_layer",
]
