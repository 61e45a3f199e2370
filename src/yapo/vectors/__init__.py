"""Steering vectors: dense (BiPO, CAA) and sparse in SAE space (YaPO, SAS)."""

from yapo.vectors.base import SteeringVector, VectorMeta
from yapo.vectors.dense import DenseVector
from yapo.vectors.edits import DenseEdit, Edit, SparseEdit, sparse_delta, sparse_delta_reference
from yapo.vectors.io import load_vector
from yapo.vectors.sparse import SparseVector
from yapo.vectors.steer import Steer

__all__ = [
    "DenseEdit",
    "DenseVector",
    "Edit",
    "SparseEdit",
    "SparseVector",
    "Steer",
    "SteeringVector",
    "VectorMeta",
    "load_vector",
    "sparse_delta",
    "sparse_delta_reference",
]
