"""yapo — learned sparse steering vectors (YaPO) and their baselines for Hugging Face LMs.

The small public surface::

    model, tokenizer = yapo.load_model("default")
    sae = yapo.load_sae("default")
    vector = yapo.load_vector("runs/yapo/vector")
    with vector.apply(model, multiplier=2.0):
        model.generate(...)
"""

from yapo._version import __version__
from yapo.errors import MismatchError, YapoError
from yapo.generation import generate
from yapo.intervene import add_to_layer
from yapo.methods import train
from yapo.models import DEFAULT_MODEL, decoder_blocks, load_model, resolve_layer
from yapo.sae import SAE, load_sae
from yapo.vectors import DenseVector, SparseVector, SteeringVector, VectorMeta, load_vector

__all__ = [
    "DEFAULT_MODEL",
    "SAE",
    "DenseVector",
    "MismatchError",
    "SelectionConfig",
    "SparseVector",
    "SteeringVector",
    "VectorMeta",
    "YapoError",
    "__version__",
    "add_to_layer",
    "decoder_blocks",
    "export_llamacpp",
    "generate",
    "import_llamacpp",
    "load_model",
    "load_sae",
    "load_vector",
    "resolve_layer",
    "select_multipliers",
    "train",
]

# Imported on first use: evaluation and export pull in more than steering needs.
_LAZY = {
    "SelectionConfig": "yapo.evaluate.selection",
    "select_multipliers": "yapo.evaluate.selection",
    "export_llamacpp": "yapo.export",
    "import_llamacpp": "yapo.export",
}


def __getattr__(name: str) -> object:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'yapo' has no attribute {name!r}")
