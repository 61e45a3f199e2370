"""Putting a server together: load the model and the named vectors, then serve."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from yapo.errors import YapoError
from yapo.sae.model import SAE
from yapo.serve.engine import Engine
from yapo.serve.http import YapoHTTPServer
from yapo.vectors.base import SteeringVector

logger = logging.getLogger(__name__)


def parse_vector_spec(spec: str) -> tuple[str, str]:
    """``NAME=PATH`` → (NAME, PATH); a bare ``PATH`` is named after its last component."""
    name, sep, path = spec.partition("=")
    if not sep:
        path = spec
        name = Path(spec.split("@")[0].rstrip("/")).name
        if name == "vector":  # a run folder's vector: name it after the run
            name = Path(spec.rstrip("/")).parent.name or name
    if not name or not path:
        raise YapoError(f"--vector expects NAME=PATH or PATH, got {spec!r}")
    return name, path


def load_vectors(specs: Sequence[str], sae: SAE | None = None) -> dict[str, SteeringVector]:
    """Load ``NAME=PATH`` specs (folders, BiPO ``.pt``, Hub ``owner/name``) by name."""
    from yapo.vectors.io import load_vector

    vectors: dict[str, SteeringVector] = {}
    for spec in specs:
        name, path = parse_vector_spec(spec)
        if name in vectors:
            raise YapoError(f"two vectors are named {name!r}; use NAME=PATH to tell them apart")
        vectors[name] = load_vector(path, sae=sae)
    return vectors


def build_server(
    model: str = "default",
    vectors: Sequence[str] | Mapping[str, SteeringVector] = (),
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    sae: SAE | None = None,
    dtype: str | None = None,
    device: str | None = None,
    served_model_name: str | None = None,
    default_max_tokens: int = 256,
    max_tokens_limit: int = 4096,
    loaded: tuple[Any, Any] | None = None,
) -> YapoHTTPServer:
    """A ready (not yet serving) server; ``loaded=(model, tokenizer)`` skips loading."""
    from yapo.models.loading import load_model

    named = dict(vectors) if isinstance(vectors, Mapping) else load_vectors(vectors, sae)
    lm, tokenizer = loaded if loaded is not None else load_model(model, dtype=dtype, device=device)
    engine = Engine(lm, tokenizer, named, served_model_name or model)
    return YapoHTTPServer(
        engine,
        host,
        port,
        default_max_tokens=default_max_tokens,
        max_tokens_limit=max_tokens_limit,
    )


def serve(server: YapoHTTPServer) -> None:
    """Serve until interrupted (Ctrl-C), then close the socket."""
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        logger.info("interrupted; shutting down")
    finally:
        server.server_close()
