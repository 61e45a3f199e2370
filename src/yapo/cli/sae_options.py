"""The options of ``yapo sae train`` whose help needs more than a line, defined once.

Kept apart from the command so that it reads as its signature plus a short body.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

SaeLayerOption = Annotated[
    int | None,
    typer.Option(help="Block whose output is encoded (default model: the shipped SAE's layer)."),
]
SaeThresholdInitOption = Annotated[
    float,
    typer.Option(
        help="JumpReLU: initial threshold θ (on unit-mean-square-norm inputs); raise it "
        "if L0 starts far too high."
    ),
]
SaeMaxTokensOption = Annotated[
    int | None, typer.Option(help="Stop extracting after this many activations.")
]
SaeStreamOption = Annotated[
    bool, typer.Option(help="No disk cache: stream through a bounded shuffle buffer.")
]
SaeActivationsOption = Annotated[
    Path | None, typer.Option(help="Activation cache folder (default OUT/activations).")
]
SaeSampleSeedsOption = Annotated[
    Path | None, typer.Option(help="Seed prompts, one per line, for the model's samples.")
]
SaeSampleTokensOption = Annotated[
    int, typer.Option(help="Add about this many tokens of the model's own samples.")
]
SaeDeadTokensOption = Annotated[
    int, typer.Option(help="A latent silent for this many tokens counts as dead.")
]
SaeDtypeOption = Annotated[
    str | None, typer.Option(help="Model dtype for extraction (bfloat16 is fast on CPU).")
]
