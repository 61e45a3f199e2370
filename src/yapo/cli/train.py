"""``yapo train``: learn a YaPO, BiPO, CAA or SAS vector from preference data."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated

import typer

from yapo.cli.options import (
    ChatOption,
    DeviceOption,
    DtypeOption,
    ModelOption,
    StrictOption,
    ThreadsOption,
    config_help,
    parse_chat,
)
from yapo.methods.job import ContrastiveConfig
from yapo.methods.preference import PreferenceConfig
from yapo.methods.registry import methods_help

DEFAULTS = PreferenceConfig()  # the one home of every training default
CONTRASTIVE = ContrastiveConfig()  # and of the CAA/SAS ones


def _help(name: str) -> str:
    return config_help(PreferenceConfig, name)


def register(app: typer.Typer) -> None:
    app.command("train")(train_command)


def train_command(
    method: Annotated[str, typer.Option(help=methods_help())],
    data: Annotated[str, typer.Option(help="Preference pairs: JSONL/CSV/Parquet/HF id/BiPO CSV.")],
    out: Annotated[Path, typer.Option(help="Run folder to write (config, metrics, vector).")],
    model: ModelOption = "default",
    layer: Annotated[
        int | None, typer.Option(help="Block whose output is steered (default: the SAE's layer).")
    ] = None,
    sae: Annotated[
        str | None, typer.Option(help="SAE for yapo/sas (default model: the shipped SAE).")
    ] = None,
    eval_data: Annotated[str | None, typer.Option(help="Held-out pairs for eval loss.")] = None,
    eval_fraction: Annotated[
        float, typer.Option(help="Hold out this fraction of questions when no --eval-data.")
    ] = 0.0,
    max_pairs: Annotated[int | None, typer.Option(help="Use only the first N pairs.")] = None,
    chat: ChatOption = "auto",
    epochs: Annotated[int, typer.Option(help=_help("epochs"))] = DEFAULTS.epochs,
    batch_size: Annotated[int, typer.Option(help=_help("batch_size"))] = DEFAULTS.batch_size,
    lr: Annotated[
        float, typer.Option("--lr", help=_help("learning_rate"))
    ] = DEFAULTS.learning_rate,
    lr_scale: Annotated[float | None, typer.Option(help=_help("lr_scale"))] = DEFAULTS.lr_scale,
    beta: Annotated[float, typer.Option(help=_help("beta"))] = DEFAULTS.beta,
    weight_decay: Annotated[
        float, typer.Option(help=_help("weight_decay"))
    ] = DEFAULTS.weight_decay,
    warmup_steps: Annotated[
        int | None, typer.Option(help=_help("warmup_steps"))
    ] = DEFAULTS.warmup_steps,
    warmup_fraction: Annotated[
        float, typer.Option(help=_help("warmup_fraction"))
    ] = DEFAULTS.warmup_fraction,
    schedule: Annotated[str, typer.Option(help=_help("schedule"))] = DEFAULTS.schedule,
    max_grad_norm: Annotated[
        float, typer.Option(help=_help("max_grad_norm"))
    ] = DEFAULTS.max_grad_norm or 0.0,
    multiplier: Annotated[float, typer.Option(help=_help("multiplier"))] = DEFAULTS.multiplier,
    one_direction: Annotated[
        bool, typer.Option("--one-direction", help="Always d = +1 (no bi-directional draw).")
    ] = not DEFAULTS.bidirectional,
    objective: Annotated[str, typer.Option(help=_help("objective"))] = DEFAULTS.objective,
    seed: Annotated[int, typer.Option(help=_help("seed"))] = DEFAULTS.seed,
    max_prompt_length: Annotated[
        int, typer.Option(help=_help("max_prompt_length"))
    ] = DEFAULTS.max_prompt_length,
    max_steps: Annotated[int | None, typer.Option(help=_help("max_steps"))] = DEFAULTS.max_steps,
    early_stopping_patience: Annotated[
        int | None, typer.Option(help=_help("early_stopping_patience"))
    ] = DEFAULTS.early_stopping_patience,
    keep_best: Annotated[bool, typer.Option(help=_help("keep_best"))] = DEFAULTS.keep_best,
    eval_every: Annotated[int | None, typer.Option(help=_help("eval_every"))] = DEFAULTS.eval_every,
    checkpoint_every: Annotated[
        int | None, typer.Option(help=_help("checkpoint_every"))
    ] = DEFAULTS.checkpoint_every,
    no_cache: Annotated[
        bool, typer.Option("--no-cache", help="Straightforward path: full forward every step.")
    ] = not DEFAULTS.cache,
    position: Annotated[str, typer.Option(help="CAA/SAS answer position.")] = CONTRASTIVE.position,
    min_frequency: Annotated[
        float, typer.Option(help="SAS: minimum firing frequency.")
    ] = CONTRASTIVE.min_frequency,
    top_k: Annotated[
        int, typer.Option(help="SAS: keep this many latents (0: all).")
    ] = CONTRASTIVE.top_k or 0,
    resume: Annotated[bool, typer.Option(help="Continue the run in --out.")] = False,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing run in --out.")] = False,
    strict: StrictOption = True,
    dtype: DtypeOption = None,
    device: DeviceOption = None,
    threads: ThreadsOption = None,
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON summary.")] = False,
) -> None:
    """Learn a steering vector from preference pairs into a run folder.

    Several processes: `accelerate launch --multi_gpu --num_processes N -m yapo.cli.main train ...`
    (without CUDA the processes use gloo on CPU).
    """
    import torch

    from yapo.methods.api import train

    chat_mode = parse_chat(chat)
    if threads:
        torch.set_num_threads(threads)
    result = train(
        method,
        data=data,
        model=model,
        layer=layer,
        sae=sae,
        out=out,
        eval_data=eval_data,
        eval_fraction=eval_fraction,
        max_pairs=max_pairs,
        chat=chat_mode,
        position=position,  # type: ignore[arg-type]
        min_frequency=min_frequency,
        top_k=top_k or None,
        resume=resume,
        overwrite=overwrite,
        strict=strict,
        dtype=dtype,
        device=device,
        progress=progress,
        config=PreferenceConfig(
            epochs=epochs,
            batch_size=batch_size,
            learning_rate=lr,
            lr_scale=lr_scale,
            beta=beta,
            weight_decay=weight_decay,
            warmup_steps=warmup_steps,
            warmup_fraction=warmup_fraction,
            early_stopping_patience=early_stopping_patience,
            keep_best=keep_best,
            schedule=schedule,
            max_grad_norm=max_grad_norm or None,
            multiplier=multiplier,
            bidirectional=not one_direction,
            objective=objective,
            seed=seed,
            max_prompt_length=max_prompt_length,
            max_steps=max_steps,
            eval_every=eval_every,
            checkpoint_every=checkpoint_every,
            cache=not no_cache,
        ),
    )
    if int(os.environ.get("RANK", "0")) != 0:
        return  # one summary per run, from the main process
    losses = result.losses()
    summary = {
        "run": str(result.run_folder),
        "vector": str(out / "vector"),
        "method": method,
        "steps": result.steps,
        "final_loss": losses[-1] if losses else None,
        "vector_norm": float(result.vector.vector.norm()),
        "nonzero": int((result.vector.vector != 0).sum()),
    }
    if as_json:
        typer.echo(json.dumps(summary))
        return
    for key, value in summary.items():
        typer.echo(f"{key}: {value}")
