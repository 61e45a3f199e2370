"""The options of ``yapo train``, defined once (defaults and help from the config classes).

Kept apart from the command so that it reads as its signature plus a short body; the
training defaults live in :class:`PreferenceConfig` and :class:`ContrastiveConfig`.
"""

from __future__ import annotations

from typing import Annotated

import typer

from yapo.cli.options import config_help
from yapo.methods.preference import PreferenceConfig


def preference_help(name: str) -> str:
    """The help of ``--NAME``: what :class:`PreferenceConfig` says of the field."""
    return config_help(PreferenceConfig, name)


LayerOption = Annotated[
    int | None, typer.Option(help="Block whose output is steered (default: the SAE's layer).")
]
TrainSaeOption = Annotated[
    str | None, typer.Option(help="SAE for yapo/sas (default model: the shipped SAE).")
]
EvalFractionOption = Annotated[
    float, typer.Option(help="Hold out this fraction of questions when no --eval-data.")
]
LrOption = Annotated[float, typer.Option("--lr", help=preference_help("learning_rate"))]
WeightDecayOption = Annotated[float, typer.Option(help=preference_help("weight_decay"))]
WarmupStepsOption = Annotated[int | None, typer.Option(help=preference_help("warmup_steps"))]
WarmupFractionOption = Annotated[float, typer.Option(help=preference_help("warmup_fraction"))]
MaxGradNormOption = Annotated[float, typer.Option(help=preference_help("max_grad_norm"))]
OneDirectionOption = Annotated[
    bool, typer.Option("--one-direction", help="Always d = +1 (no bi-directional draw).")
]
MaxPromptLengthOption = Annotated[int, typer.Option(help=preference_help("max_prompt_length"))]
EarlyStoppingPatienceOption = Annotated[
    int | None, typer.Option(help=preference_help("early_stopping_patience"))
]
CheckpointEveryOption = Annotated[
    int | None, typer.Option(help=preference_help("checkpoint_every"))
]
TrainNoCacheOption = Annotated[
    bool, typer.Option("--no-cache", help="Straightforward path: full forward every step.")
]
MinFrequencyOption = Annotated[float, typer.Option(help="SAS: minimum firing frequency.")]
TopKOption = Annotated[int, typer.Option(help="SAS: keep this many latents (0: all).")]
BatchSizeOption = Annotated[int, typer.Option(help=preference_help("batch_size"))]
LrScaleOption = Annotated[float | None, typer.Option(help=preference_help("lr_scale"))]
TrainMultiplierOption = Annotated[float, typer.Option(help=preference_help("multiplier"))]
MaxStepsOption = Annotated[int | None, typer.Option(help=preference_help("max_steps"))]
KeepBestOption = Annotated[bool, typer.Option(help=preference_help("keep_best"))]
EvalEveryOption = Annotated[int | None, typer.Option(help=preference_help("eval_every"))]
