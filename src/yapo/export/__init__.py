"""Taking vectors where people run models: llama.cpp control vectors (GGUF).

Serving vectors exactly over HTTP is :mod:`yapo.serve`; Hub-ready folders are
:mod:`yapo.vectors.card`.
"""

from yapo.export.convert import ExportReport, export_llamacpp, import_llamacpp
from yapo.export.linearize import Linearization, layer_states, linearize
from yapo.export.llamacpp import (
    ControlVectorFile,
    llamacpp_buffer,
    llamacpp_index,
    read_control_vector,
    write_control_vector,
)

__all__ = [
    "ControlVectorFile",
    "ExportReport",
    "Linearization",
    "export_llamacpp",
    "import_llamacpp",
    "layer_states",
    "linearize",
    "llamacpp_buffer",
    "llamacpp_index",
    "read_control_vector",
    "write_control_vector",
]
