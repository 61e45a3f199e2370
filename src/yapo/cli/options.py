"""Options shared by several commands, defined once (defaults come from the config classes).

``--multiplier`` takes a number or ``auto``; ``auto`` chooses each vector's λ on
validation questions (:mod:`yapo.evaluate.selection`) with the selection options below.
"""

from __future__ import annotations

from typing import Annotated

import typer

from yapo.evaluate.selection import SELECTION_METRICS, SelectionConfig

SELECTION = SelectionConfig()  # the one home of the selection defaults


def _grid(values: tuple[float, ...]) -> str:
    return ",".join(f"{v:g}" for v in values)


MultiplierOption = Annotated[
    str,
    typer.Option(
        help="λ at evaluation: a number, or 'auto' (each vector's λ chosen on validation "
        "questions from --select-grid, by --select-metric, within the fluency limits).",
    ),
]
SelectGridOption = Annotated[
    str, typer.Option(help="λ grid that --multiplier auto chooses from (comma-separated).")
]
SelectMetricOption = Annotated[
    str, typer.Option(help=f"Metric --multiplier auto maximises: {' | '.join(SELECTION_METRICS)}.")
]
MaxNllIncreaseOption = Annotated[
    float | None,
    typer.Option(
        help="Fluency limit: largest rise of the unsteered model's NLL per token of steered "
        "generations over its own (nats; negative: no limit)."
    ),
]
MaxRepetitionOption = Annotated[
    float | None,
    typer.Option(
        help="Fluency limit: largest share of repeated 4-grams in steered generations "
        "(negative: no limit)."
    ),
]
NoCacheOption = Annotated[
    bool,
    typer.Option(
        "--no-cache",
        help="Score every condition with a full forward (the straightforward path, the "
        "oracle) instead of sharing one pass of the blocks below the vectors' layer.",
    ),
]
FluencyPromptsOption = Annotated[
    int, typer.Option(help="Validation prompts generated per λ to measure fluency (0: none).")
]

DEFAULT_GRID = _grid(SELECTION.multipliers)


def parse_multiplier(text: str) -> float | str:
    """``"auto"`` or a finite number, else a clear error."""
    import math

    from yapo.errors import YapoError

    if text.strip().lower() == "auto":
        return "auto"
    try:
        value = float(text)
    except ValueError:
        raise YapoError(f"--multiplier must be a number or 'auto', got {text!r}") from None
    if not math.isfinite(value):
        raise YapoError(f"--multiplier must be finite, got {text!r}")
    return value


def selection_config(
    grid: str,
    metric: str,
    max_nll_increase: float | None,
    max_repetition: float | None,
    fluency_prompts: int,
) -> SelectionConfig:
    """A checked :class:`SelectionConfig` from the command-line options."""
    from yapo.evaluate.sweep import parse_multipliers

    config = SelectionConfig(
        multipliers=tuple(parse_multipliers(grid)),
        metric=metric,
        max_nll_increase=None
        if max_nll_increase is not None and max_nll_increase < 0
        else max_nll_increase,
        max_repetition=None
        if max_repetition is not None and max_repetition < 0
        else max_repetition,
        fluency_prompts=fluency_prompts,
        fluency_tokens=SELECTION.fluency_tokens,
    )
    config.check()
    return config
