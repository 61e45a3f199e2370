"""``yapo serve``: an OpenAI-compatible HTTP server that steers per request, exactly.

A request names its vectors in an extra body field (``"steering": [...]``); dense and
sparse (YaPO/SAS) vectors are applied with their own ``apply``, so an SAE-space edit is
served exactly, not as a fixed direction. Requests are serialised (see
:mod:`yapo.serve.engine`).
"""

from yapo.serve.engine import Completion, Engine
from yapo.serve.http import YapoHTTPServer, vector_info
from yapo.serve.launch import build_server, load_vectors, parse_vector_spec, serve
from yapo.serve.protocol import (
    GenerationRequest,
    RequestError,
    SteeringSpec,
    parse_request,
    parse_steering,
)

__all__ = [
    "Completion",
    "Engine",
    "GenerationRequest",
    "RequestError",
    "SteeringSpec",
    "YapoHTTPServer",
    "build_server",
    "load_vectors",
    "parse_request",
    "parse_steering",
    "parse_vector_spec",
    "serve",
    "vector_info",
]
