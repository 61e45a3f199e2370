"""Options shared by several commands, defined once (defaults come from the config classes).

Every option alias used by more than one command lives here, so that its name, short
flag and help read the same in every command's ``--help``.

``--multiplier`` takes a number or ``auto``; ``auto`` chooses each vector's λ on
validation questions (:mod:`yapo.evaluate.selection`) with the selection options below.
"""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path
from typing import Annotated, Any

import typer

from yapo.errors import YapoError
from yapo.evaluate.selection import SelectionConfig

SELECTION = SelectionConfig()  # the one home of the selection defaults


def config_help(config: type[Any], name: str) -> str:
    """The help text a config dataclass declares for field ``name`` (its metadata)."""
    for item in fields(config):
        if item.name == name:
            return str(item.metadata["help"])
    raise KeyError(f"{config.__name__} has no field {name!r}")


ModelOption = Annotated[
    str, typer.Option("--model", "-m", help="Hub id, local folder, .gguf file, or 'default'.")
]
OutOption = Annotated[Path, typer.Option("--out", "-o", help="Output folder.")]
DtypeOption = Annotated[str | None, typer.Option(help="float32 | bfloat16 | float16")]
DeviceOption = Annotated[str | None, typer.Option(help="cpu, cuda, cuda:1, ...")]
ThreadsOption = Annotated[
    int | None, typer.Option(help="torch CPU threads (default: torch's choice).")
]
SaeOption = Annotated[
    str | None,
    typer.Option(
        help="SAE reference: for sparse vectors (default: the one they name), or to "
        "read a dense vector in SAE space."
    ),
]
ChatOption = Annotated[str, typer.Option(help="Chat template: auto | on | off.")]
BatchOption = Annotated[int, typer.Option(help="Rows per forward pass / prompts per generate.")]
StrictOption = Annotated[
    bool, typer.Option(help="Stop on invalid data records (--no-strict skips them).")
]
CHAT_MODES: dict[str, bool | str] = {"auto": "auto", "on": True, "off": False}
_OLD_CHAT: dict[str, bool | str] = {"yes": True, "no": False}  # `yapo train`'s first spelling


def parse_chat(value: str) -> bool | str:
    """``--chat``: ``auto`` (when the tokenizer has a template), ``on`` or ``off``."""
    mapping = {**CHAT_MODES, **_OLD_CHAT}
    if value not in mapping:
        raise YapoError(f"--chat must be auto, on or off, got {value!r}")
    return mapping[value]


def _grid(values: tuple[float, ...]) -> str:
    return ",".join(f"{v:g}" for v in values)


MultiplierOption = Annotated[
    str,
    typer.Option(
        help="λ at evaluation: a number, or 'auto' (each vector's λ chosen on validation "
        "questions from --select-grid, by --select-metric, within the fluency limits).",
    ),
]
SelectGridOption = Annotated[str, typer.Option(help=config_help(SelectionConfig, "multipliers"))]
SelectMetricOption = Annotated[str, typer.Option(help=config_help(SelectionConfig, "metric"))]
MaxNllIncreaseOption = Annotated[
    float | None, typer.Option(help=config_help(SelectionConfig, "max_nll_increase"))
]
MaxRepetitionOption = Annotated[
    float | None, typer.Option(help=config_help(SelectionConfig, "max_repetition"))
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
    int, typer.Option(help=config_help(SelectionConfig, "fluency_prompts"))
]
FluencyEveryPointOption = Annotated[
    bool, typer.Option(help=config_help(SelectionConfig, "fluency_every_point"))
]
AllowUnsteeredOption = Annotated[
    bool, typer.Option(help=config_help(SelectionConfig, "allow_unsteered"))
]

DEFAULT_GRID = _grid(SELECTION.multipliers)


def csv_items(text: str) -> list[str]:
    """The non-blank, stripped parts of a comma-separated option (``"Spain, Mexico,"``)."""
    return [part.strip() for part in text.split(",") if part.strip()]


def parse_multiplier(text: str) -> float | str:
    """``"auto"`` or a finite number, else a clear error."""
    import math

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
    fluency_every_point: bool = SELECTION.fluency_every_point,
    allow_unsteered: bool = SELECTION.allow_unsteered,
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
        fluency_every_point=fluency_every_point,
        allow_unsteered=allow_unsteered,
    )
    config.validate()
    return config
