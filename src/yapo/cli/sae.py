"""``yapo sae train`` and ``yapo sae eval``: train sparse autoencoders and measure them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from yapo.cli.options import ModelOption
from yapo.cli.sae_options import (
    SaeActivationsOption,
    SaeDeadTokensOption,
    SaeDtypeOption,
    SaeLayerOption,
    SaeMaxTokensOption,
    SaeSampleSeedsOption,
    SaeSampleTokensOption,
    SaeStreamOption,
    SaeThresholdInitOption,
)

sae_app = typer.Typer(
    help="Train and evaluate sparse autoencoders on a model's residual stream.",
    no_args_is_help=True,
)

CorpusOption = Annotated[
    list[Path],
    typer.Option(
        "--corpus",
        help="Text (.txt: one document per paragraph) or JSONL file; repeat for several.",
    ),
]


def register(app: typer.Typer) -> None:
    app.add_typer(sae_app, name="sae")


def _layer_for(model: str, layer: int | None) -> int:
    from yapo.errors import YapoError

    if layer is not None:
        return layer
    if model == "default":
        from yapo.sae.default import DEFAULT_LAYER

        return DEFAULT_LAYER
    raise YapoError("--layer is required for models other than 'default'")


@sae_app.command("train")
def train_command(
    out: Annotated[Path, typer.Option("--out", help="Run folder (resumes if it exists).")],
    corpus: CorpusOption = [],  # noqa: B006 - typer needs a literal default
    model: ModelOption = "default",
    layer: SaeLayerOption = None,
    width: Annotated[int, typer.Option(help="Number of SAE latents (d_sae).")] = 4096,
    architecture: Annotated[str, typer.Option(help="jumprelu | topk")] = "jumprelu",
    k: Annotated[int, typer.Option(help="TopK: active latents per token.")] = 64,
    l0_coefficient: Annotated[float, typer.Option(help="JumpReLU: L0 penalty λ.")] = 1e-3,
    threshold_init: SaeThresholdInitOption = 1e-3,
    steps: Annotated[int | None, typer.Option(help="Optimizer steps (default: epochs).")] = None,
    epochs: Annotated[float, typer.Option(help="Passes over the activations.")] = 1.0,
    batch_size: Annotated[int, typer.Option(help="Activations per step.")] = 4096,
    lr: Annotated[float, typer.Option(help="Adam learning rate.")] = 3e-4,
    max_tokens: SaeMaxTokensOption = None,
    context_size: Annotated[int, typer.Option(help="Tokens per window (BOS included).")] = 256,
    model_batch_size: Annotated[int, typer.Option(help="Windows per forward pass.")] = 8,
    stream: SaeStreamOption = False,
    buffer_size: Annotated[int, typer.Option(help="Shuffle buffer (activations).")] = 2**18,
    activations: SaeActivationsOption = None,
    sample_seeds: SaeSampleSeedsOption = None,
    sample_tokens: SaeSampleTokensOption = 0,
    text_field: Annotated[str, typer.Option(help="JSONL field holding the text.")] = "text",
    dead_tokens: SaeDeadTokensOption = 1_000_000,
    aux_k: Annotated[int, typer.Option(help="AuxK: dead latents used per token.")] = 256,
    seed: Annotated[int, typer.Option()] = 0,
    checkpoint_every: Annotated[int, typer.Option(help="Steps between checkpoints.")] = 200,
    save_dtype: Annotated[str, typer.Option(help="float32 | float16 | bfloat16")] = "float32",
    dtype: SaeDtypeOption = None,
    device: Annotated[str | None, typer.Option(help="cpu, cuda, ...")] = None,
    progress: Annotated[bool, typer.Option(help="Show progress bars.")] = True,
) -> None:
    """Train a JumpReLU or TopK SAE on one layer's activations over a text corpus."""
    from yapo.models import load_model
    from yapo.sae.training.pipeline import SAEPipelineConfig, train_sae

    chosen_layer = _layer_for(model, layer)
    options = SAEPipelineConfig(
        layer=chosen_layer,
        width=width,
        architecture=architecture,  # type: ignore[arg-type]
        k=k,
        l0_coefficient=l0_coefficient,
        threshold_init=threshold_init,
        steps=steps,
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        max_tokens=max_tokens,
        context_size=context_size,
        model_batch_size=model_batch_size,
        stream=stream,
        buffer_size=buffer_size,
        activations=activations,
        sample_seeds=sample_seeds,
        sample_tokens=sample_tokens,
        text_field=text_field,
        dead_tokens=dead_tokens,
        aux_k=aux_k,
        seed=seed,
        checkpoint_every=checkpoint_every,
        save_dtype=save_dtype,
    )
    lm, tokenizer = load_model(model, dtype=dtype, device=device)
    result = train_sae(lm, tokenizer, corpus, out, options, model_name=model, progress=progress)
    _print_trained(result, out)


def _print_trained(result: Any, out: Path) -> None:
    """Where the SAE went, its steps and time, and its final metrics (one JSON object)."""
    summary = {
        "sae": str(out / "sae"),
        "steps": result.steps,
        "seconds": round(result.seconds, 1),
        **result.final_metrics,
    }
    typer.echo(json.dumps(summary, indent=2))


@sae_app.command("eval")
def eval_command(
    sae: Annotated[str, typer.Option("--sae", help="SAE folder or reference ('default').")],
    corpus: CorpusOption = [],  # noqa: B006
    model: ModelOption = "default",
    layer: Annotated[
        int | None, typer.Option(help="Layer (default: the SAE's hook_layer).")
    ] = None,
    max_tokens: Annotated[
        int, typer.Option(help="Evaluate on at most this many tokens.")
    ] = 100_000,
    context_size: Annotated[int, typer.Option()] = 256,
    batch_size: Annotated[int, typer.Option(help="Windows per forward pass.")] = 8,
    text_field: Annotated[str, typer.Option(help="JSONL field holding the text.")] = "text",
    dtype: Annotated[str | None, typer.Option(help="Model dtype.")] = None,
    device: Annotated[str | None, typer.Option()] = None,
    output: Annotated[
        Path | None, typer.Option(help="Also write the metrics to this JSON file.")
    ] = None,
    progress: Annotated[bool, typer.Option(help="Show progress bars.")] = True,
) -> None:
    """Variance explained, L0, dead/dense latents and the loss increase when spliced in."""
    from yapo._io import write_json
    from yapo.errors import YapoError
    from yapo.models import load_model
    from yapo.sae import load_sae
    from yapo.sae.training.corpus import iter_corpus
    from yapo.sae.training.evaluation import evaluate_sae

    loaded = load_sae(sae)
    chosen = layer if layer is not None else loaded.metadata.get("hook_layer")
    if chosen is None:
        raise YapoError("this SAE does not record its layer (hook_layer); pass --layer")
    lm, tokenizer = load_model(model, dtype=dtype, device=device)
    result = evaluate_sae(
        lm,
        tokenizer,
        loaded,
        iter_corpus(corpus, text_field=text_field),
        int(chosen),
        context_size=context_size,
        batch_size=batch_size,
        max_tokens=max_tokens,
        progress=progress,
    )
    record = {"sae": sae, "model": model, "layer": int(chosen), **result.to_json()}
    if output is not None:
        write_json(output, record)
    typer.echo(json.dumps(record, indent=2))
