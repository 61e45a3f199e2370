"""``yapo train``: learn a YaPO, BiPO, CAA or SAS vector from preference data."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated

import typer

from yapo.methods.preference import PreferenceConfig

DEFAULTS = PreferenceConfig()  # the one home of every training default


def register(app: typer.Typer) -> None:
    app.command("train")(train_command)


def train_command(
    method: Annotated[str, typer.Option(help="yapo | bipo | caa | sas")],
    data: Annotated[str, typer.Option(help="Preference pairs: JSONL/CSV/Parquet/HF id/BiPO CSV.")],
    out: Annotated[Path, typer.Option(help="Run folder to write (config, metrics, vector).")],
    model: Annotated[
        str, typer.Option("--model", "-m", help="Hub id, local folder, .gguf file, or 'default'.")
    ] = "default",
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
    chat: Annotated[str, typer.Option(help="Chat template: auto | yes | no.")] = "auto",
    epochs: Annotated[int, typer.Option()] = DEFAULTS.epochs,
    batch_size: Annotated[
        int, typer.Option(help="Pairs per optimizer step (global).")
    ] = DEFAULTS.batch_size,
    lr: Annotated[
        float,
        typer.Option(
            "--lr",
            help="Learning rate relative to the measured scale of what v steers "
            "(absolute with --lr-scale 1; the paper: --lr 5e-4 --lr-scale 1).",
        ),
    ] = DEFAULTS.learning_rate,
    lr_scale: Annotated[
        float | None,
        typer.Option(help="Scale --lr and --weight-decay are relative to (default: measured)."),
    ] = DEFAULTS.lr_scale,
    beta: Annotated[float, typer.Option(help="DPO β.")] = DEFAULTS.beta,
    weight_decay: Annotated[
        float, typer.Option(help="AdamW decay, relative like --lr (holds |v_i| near scale/wd).")
    ] = DEFAULTS.weight_decay,
    warmup_steps: Annotated[
        int | None, typer.Option(help="Warm-up steps (default: --warmup-fraction of the run).")
    ] = DEFAULTS.warmup_steps,
    warmup_fraction: Annotated[
        float, typer.Option(help="Warm-up as a fraction of the run's steps.")
    ] = DEFAULTS.warmup_fraction,
    schedule: Annotated[
        str, typer.Option(help="cosine | linear | constant | constant_with_warmup")
    ] = DEFAULTS.schedule,
    max_grad_norm: Annotated[float, typer.Option(help="Gradient clipping (0: off).")] = 1.0,
    multiplier: Annotated[
        float, typer.Option(help="Steering strength λ during training.")
    ] = DEFAULTS.multiplier,
    one_direction: Annotated[
        bool, typer.Option("--one-direction", help="Always d = +1 (no bi-directional draw).")
    ] = False,
    objective: Annotated[
        str, typer.Option(help="bipo (bi-directional DPO) | reps (RePS, reference-free).")
    ] = DEFAULTS.objective,
    seed: Annotated[int, typer.Option()] = DEFAULTS.seed,
    max_prompt_length: Annotated[int, typer.Option()] = DEFAULTS.max_prompt_length,
    max_steps: Annotated[int | None, typer.Option(help="Stop after this many steps.")] = None,
    early_stopping_patience: Annotated[
        int | None,
        typer.Option(help="Stop after N evaluations without a lower eval loss (needs eval data)."),
    ] = DEFAULTS.early_stopping_patience,
    keep_best: Annotated[
        bool,
        typer.Option(help="With eval data, keep the vector of the best eval loss (else the last)."),
    ] = DEFAULTS.keep_best,
    eval_every: Annotated[int | None, typer.Option(help="Also evaluate every N steps.")] = None,
    checkpoint_every: Annotated[
        int | None, typer.Option(help="Also checkpoint every N steps.")
    ] = None,
    no_cache: Annotated[
        bool, typer.Option("--no-cache", help="Straightforward path: full forward every step.")
    ] = False,
    position: Annotated[str, typer.Option(help="CAA/SAS answer position.")] = "last",
    min_frequency: Annotated[float, typer.Option(help="SAS: minimum firing frequency.")] = 0.1,
    top_k: Annotated[int, typer.Option(help="SAS: keep this many latents (0: all).")] = 64,
    resume: Annotated[bool, typer.Option(help="Continue the run in --out.")] = False,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing run in --out.")] = False,
    strict: Annotated[bool, typer.Option(help="Fail on invalid records.")] = True,
    dtype: Annotated[str | None, typer.Option(help="float32 | bfloat16 | float16")] = None,
    device: Annotated[str | None, typer.Option(help="cpu, cuda, cuda:1, ...")] = None,
    threads: Annotated[int | None, typer.Option(help="CPU threads for torch.")] = None,
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON summary.")] = False,
) -> None:
    """Learn a steering vector from preference pairs into a run folder.

    Several processes: `accelerate launch --multi_gpu --num_processes N -m yapo.cli.main train ...`
    (without CUDA the processes use gloo on CPU).
    """
    import torch

    from yapo.errors import YapoError
    from yapo.methods.api import train

    modes: dict[str, bool | str] = {"auto": "auto", "yes": True, "no": False}
    chat_mode = modes.get(chat)
    if chat_mode is None:
        raise YapoError("--chat must be auto, yes or no")
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
