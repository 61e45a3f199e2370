"""Core commands: ``generate`` (the steering smoke path) and ``info``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from yapo.cli.options import ModelOption


def register(app: typer.Typer) -> None:
    app.command("generate")(generate_command)
    app.command("info")(info_command)


def generate_command(
    prompts: Annotated[list[str], typer.Argument(help="One or more prompts.")],
    model: ModelOption = "default",
    vector: Annotated[
        Path | None, typer.Option(help="Vector folder (or BiPO .pt file) to steer with.")
    ] = None,
    multiplier: Annotated[float, typer.Option(help="Steering strength λ.")] = 1.0,
    direction: Annotated[int, typer.Option(help="+1 toward the behaviour, -1 away.")] = 1,
    positions: Annotated[str, typer.Option(help="all | prompt | generated")] = "all",
    sae: Annotated[str | None, typer.Option(help="SAE for a sparse vector.")] = None,
    layer: Annotated[int | None, typer.Option(help="Layer for a bare .pt vector.")] = None,
    allow_other_model: Annotated[
        bool,
        typer.Option(help="Accept a model whose weights differ from the vector's (a sibling)."),
    ] = False,
    max_new_tokens: Annotated[int, typer.Option()] = 48,
    sample: Annotated[bool, typer.Option(help="Sample instead of greedy decoding.")] = False,
    chat: Annotated[bool, typer.Option(help="Use the tokenizer's chat template.")] = False,
    dtype: Annotated[str | None, typer.Option(help="float32 | bfloat16 | float16")] = None,
    device: Annotated[str | None, typer.Option(help="cpu, cuda, cuda:1, ...")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Generate text, optionally steered by a vector."""
    from yapo.errors import YapoError
    from yapo.generation import generate
    from yapo.intervene import POSITIONS
    from yapo.models import load_model
    from yapo.sae import load_sae
    from yapo.vectors import load_vector

    if positions not in POSITIONS:
        raise YapoError(f"--positions must be one of {', '.join(POSITIONS)}")
    steering = None
    if vector is not None:
        steering = load_vector(
            vector,
            sae=load_sae(sae) if sae else None,
            layer=layer,
            strict_model=not allow_other_model,
        )
    lm, tokenizer = load_model(model, dtype=dtype, device=device)
    outputs = generate(
        lm,
        tokenizer,
        prompts,
        vector=steering,
        multiplier=multiplier,
        direction=direction,
        positions=positions,  # type: ignore[arg-type]
        max_new_tokens=max_new_tokens,
        do_sample=sample,
        chat=chat,
    )
    if as_json:
        typer.echo(json.dumps([{"prompt": p, "output": o} for p, o in zip(prompts, outputs)]))
        return
    for prompt, output in zip(prompts, outputs):
        typer.secho(prompt, bold=True, nl=False)
        typer.echo(output)


def info_command(
    vector: Annotated[Path | None, typer.Option(help="Vector folder to describe.")] = None,
    sae: Annotated[str | None, typer.Option(help="SAE reference to describe.")] = None,
) -> None:
    """Describe a vector or an SAE."""
    from yapo.sae import load_sae
    from yapo.vectors import load_vector

    if sae is not None:
        loaded = load_sae(sae)
        typer.echo(
            json.dumps(
                {
                    "reference": loaded.reference,
                    "d_in": loaded.d_in,
                    "d_sae": loaded.d_sae,
                    "activation": loaded.activation,
                    "k": loaded.k,
                    "checksum": loaded.checksum(),
                    "metadata": loaded.metadata,
                },
                indent=2,
            )
        )
    if vector is not None:
        loaded_vector = load_vector(vector)
        typer.echo(repr(loaded_vector))
        typer.echo(json.dumps(loaded_vector.meta.to_json(), indent=2))
