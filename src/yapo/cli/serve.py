"""``yapo serve``: an OpenAI-compatible HTTP server with per-request steering."""

from __future__ import annotations

import logging
from typing import Annotated

import typer


def register(app: typer.Typer) -> None:
    app.command("serve")(serve_command)


def serve_command(
    model: Annotated[
        str, typer.Option("--model", "-m", help="Hub id, local folder, .gguf file, or 'default'.")
    ] = "default",
    vector: Annotated[
        list[str] | None,
        typer.Option(help="NAME=PATH of a vector requests may name (repeatable; Hub ids too)."),
    ] = None,
    sae: Annotated[str | None, typer.Option(help="SAE for sparse vectors.")] = None,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
    served_model_name: Annotated[
        str | None, typer.Option(help="Model id clients use (default: --model).")
    ] = None,
    max_tokens: Annotated[int, typer.Option(help="Default max_tokens for chat requests.")] = 256,
    max_tokens_limit: Annotated[int, typer.Option(help="Largest max_tokens accepted.")] = 4096,
    dtype: Annotated[str | None, typer.Option(help="float32 | bfloat16 | float16")] = None,
    device: Annotated[str | None, typer.Option(help="cpu, cuda, cuda:1, ...")] = None,
) -> None:
    """Serve /v1/completions, /v1/chat/completions, /v1/models and /v1/vectors.

    Each request steers with the vectors it names in the extra body field
    "steering": [{"vector": NAME, "multiplier": 2, "direction": 1, "positions": "all"}].
    Requests are served one at a time (steering hooks a shared model).
    """
    from yapo.sae import load_sae
    from yapo.serve import build_server, serve

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    server = build_server(
        model,
        list(vector or []),
        host=host,
        port=port,
        sae=load_sae(sae) if sae else None,
        dtype=dtype,
        device=device,
        served_model_name=served_model_name,
        default_max_tokens=max_tokens,
        max_tokens_limit=max_tokens_limit,
    )
    names = ", ".join(sorted(server.engine.vectors)) or "none"
    typer.echo(f"serving {server.engine.model_id} on {server.url}/v1 (vectors: {names})")
    serve(server)
