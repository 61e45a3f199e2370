"""``yapo train``: learn a YaPO, BiPO, CAA or SAS vector from preference data."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated, Any

import typer

from yapo.cli.options import (
    ChatOption,
    DeviceOption,
    DtypeOption,
    ModelOption,
    StrictOption,
    ThreadsOption,
    parse_chat,
)
from yapo.cli.train_options import (
    BatchSizeOption,
    CheckpointEveryOption,
    EarlyStoppingPatienceOption,
    EvalEveryOption,
    EvalFractionOption,
    KeepBestOption,
    LayerOption,
    LrOption,
    LrScaleOption,
    MaxGradNormOption,
    MaxPromptLengthOption,
    MaxStepsOption,
    MinFrequencyOption,
    OneDirectionOption,
    TopKOption,
    TrainMultiplierOption,
    TrainNoCacheOption,
    TrainSaeOption,
    WarmupFractionOption,
    WarmupStepsOption,
    WeightDecayOption,
    preference_help,
)
from yapo.methods.job import ContrastiveConfig
from yapo.methods.preference import PreferenceConfig
from yapo.methods.registry import methods_help

DEFAULTS = PreferenceConfig()  # the one home of every training default
CONTRASTIVE = ContrastiveConfig()  # and of the CAA/SAS ones


def register(app: typer.Typer) -> None:
    app.command("train")(train_command)


def train_command(
    method: Annotated[str, typer.Option(help=methods_help())],
    data: Annotated[str, typer.Option(help="Preference pairs: JSONL/CSV/Parquet/HF id/BiPO CSV.")],
    out: Annotated[Path, typer.Option(help="Run folder to write (config, metrics, vector).")],
    model: ModelOption = "default",
    layer: LayerOption = None,
    sae: TrainSaeOption = None,
    eval_data: Annotated[str | None, typer.Option(help="Held-out pairs for eval loss.")] = None,
    eval_fraction: EvalFractionOption = 0.0,
    max_pairs: Annotated[int | None, typer.Option(help="Use only the first N pairs.")] = None,
    chat: ChatOption = "auto",
    epochs: Annotated[int, typer.Option(help=preference_help("epochs"))] = DEFAULTS.epochs,
    batch_size: BatchSizeOption = DEFAULTS.batch_size,
    lr: LrOption = DEFAULTS.learning_rate,
    lr_scale: LrScaleOption = DEFAULTS.lr_scale,
    beta: Annotated[float, typer.Option(help=preference_help("beta"))] = DEFAULTS.beta,
    weight_decay: WeightDecayOption = DEFAULTS.weight_decay,
    warmup_steps: WarmupStepsOption = DEFAULTS.warmup_steps,
    warmup_fraction: WarmupFractionOption = DEFAULTS.warmup_fraction,
    schedule: Annotated[str, typer.Option(help=preference_help("schedule"))] = DEFAULTS.schedule,
    max_grad_norm: MaxGradNormOption = DEFAULTS.max_grad_norm or 0.0,
    multiplier: TrainMultiplierOption = DEFAULTS.multiplier,
    one_direction: OneDirectionOption = not DEFAULTS.bidirectional,
    objective: Annotated[str, typer.Option(help=preference_help("objective"))] = DEFAULTS.objective,
    seed: Annotated[int, typer.Option(help=preference_help("seed"))] = DEFAULTS.seed,
    max_prompt_length: MaxPromptLengthOption = DEFAULTS.max_prompt_length,
    max_steps: MaxStepsOption = DEFAULTS.max_steps,
    early_stopping_patience: EarlyStoppingPatienceOption = DEFAULTS.early_stopping_patience,
    keep_best: KeepBestOption = DEFAULTS.keep_best,
    eval_every: EvalEveryOption = DEFAULTS.eval_every,
    checkpoint_every: CheckpointEveryOption = DEFAULTS.checkpoint_every,
    no_cache: TrainNoCacheOption = not DEFAULTS.cache,
    position: Annotated[str, typer.Option(help="CAA/SAS answer position.")] = CONTRASTIVE.position,
    min_frequency: MinFrequencyOption = CONTRASTIVE.min_frequency,
    top_k: TopKOption = CONTRASTIVE.top_k or 0,
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
    optimiser = (epochs, batch_size, lr, lr_scale, beta, weight_decay, max_grad_norm)
    schedule_ = (warmup_steps, warmup_fraction, schedule, max_steps)
    objective_ = (multiplier, one_direction, objective, seed, max_prompt_length)
    stopping = (early_stopping_patience, keep_best, eval_every, checkpoint_every, no_cache)
    config = _preference_config(optimiser, schedule_, objective_, stopping)
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
        config=config,
    )
    if int(os.environ.get("RANK", "0")) == 0:  # one summary per run, from the main process
        _print_summary(result, out, method, as_json)


def _preference_config(
    optimiser: tuple[int, int, float, float | None, float, float, float],
    schedule: tuple[int | None, float, str, int | None],
    objective: tuple[float, bool, str, int, int],
    stopping: tuple[int | None, bool, int | None, int | None, bool],
) -> PreferenceConfig:
    """The :class:`PreferenceConfig` of ``yapo train``'s options, grouped as the command has them.

    ``optimiser``: epochs, batch size, lr, lr scale, β, weight decay, max grad norm (0: none);
    ``schedule``: warm-up steps and fraction, schedule, max steps; ``objective``: multiplier,
    one direction, objective, seed, max prompt length; ``stopping``: patience, keep best,
    eval every, checkpoint every, no cache.
    """
    epochs, batch_size, lr, lr_scale, beta, weight_decay, max_grad_norm = optimiser
    warmup_steps, warmup_fraction, schedule_name, max_steps = schedule
    multiplier, one_direction, objective_name, seed, max_prompt_length = objective
    early_stopping_patience, keep_best, eval_every, checkpoint_every, no_cache = stopping
    return PreferenceConfig(
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
        schedule=schedule_name,
        max_grad_norm=max_grad_norm or None,
        multiplier=multiplier,
        bidirectional=not one_direction,
        objective=objective_name,
        seed=seed,
        max_prompt_length=max_prompt_length,
        max_steps=max_steps,
        eval_every=eval_every,
        checkpoint_every=checkpoint_every,
        cache=not no_cache,
    )


def _print_summary(result: Any, out: Path, method: str, as_json: bool) -> None:
    """The run's folder, steps, final loss and vector size, as lines or one JSON object."""
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
