"""Sparse autoencoders: the model, its file formats, and (see ``training``) how to train one."""

from yapo.sae.formats import load_sae
from yapo.sae.model import SAE, Activation

__all__ = ["SAE", "Activation", "load_sae"]
