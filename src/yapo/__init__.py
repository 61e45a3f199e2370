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
from yapo.hooks import add_to_layer
from yapo.methods import train
from yapo.models import DEFAULT_MODEL, decoder_blocks, load_model, resolve_layer
from yapo.sae import SAE, load_sae
from yapo.vectors import DenseVector, SparseVector, SteeringVector, VectorMeta, load_vector

__all__ = [
    "DEFAULT_MODEL",
    "SAE",
    "DenseVector",
    "MismatchError",
    "SparseVector",
    "SteeringVector",
    "VectorMeta",
    "YapoError",
    "__version__",
    "add_to_layer",
    "decoder_blocks",
    "generate",
    "load_model",
    "load_sae",
    "load_vector",
    "resolve_layer",
    "train",
]
