"""The options of ``yapo eval`` and ``yapo sweep``, defined once for both.

Kept apart from the commands so that each command reads as its signature plus a short
body; the help texts here are what ``--help`` shows (tests check some of them).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

DataOption = Annotated[
    str,
    typer.Option(
        "--data", "-d", help="Cultural MCQ file or dataset (JSONL/JSON/CSV/Parquet/HF), or 'demo'."
    ),
]
VectorOption = Annotated[
    list[str] | None,
    typer.Option(
        "--vector",
        help="Vector folder (or BiPO .pt) to compare; repeat for several; NAME=DIR names it.",
    ),
]
DirectionOption = Annotated[int, typer.Option(help="+1 toward the behaviour, -1 away.")]
ModeOption = Annotated[
    str, typer.Option(help="MCQ scoring: loglik (base models) | generate (\\boxed{}, chat).")
]
ChoicesOption = Annotated[
    str, typer.Option(help="loglik continuation: text | letter | letter_text.")
]
NormalizeOption = Annotated[
    bool, typer.Option(help="Length-normalize log-likelihoods (per-token mean).")
]
MaxNewOption = Annotated[int, typer.Option(help="Tokens to generate (generate mode, answers).")]
LimitOption = Annotated[int | None, typer.Option(help="Use only the first N items.")]
CountriesOption = Annotated[
    str | None, typer.Option(help="Comma-separated countries to keep (default: all).")
]
UnitOption = Annotated[str, typer.Option(help="RCA/PNLG pairs: country | item.")]
AlphaOption = Annotated[float, typer.Option(help="PNLG's α in [0, 1].")]
BootstrapOption = Annotated[int, typer.Option(help="Bootstrap samples for intervals (0: none).")]
ConfidenceOption = Annotated[float, typer.Option(help="Interval level.")]
SeedOption = Annotated[int, typer.Option(help="Bootstrap seed.")]
ValidationDataOption = Annotated[
    str | None,
    typer.Option(
        help="Validation MCQs (never the test ones) on which --multiplier auto chooses "
        "each vector's λ, e.g. a compare run's validation_items.jsonl."
    ),
]
OpenDataOption = Annotated[
    str | None, typer.Option(help="Open-ended questions (file/dataset) to generate and judge.")
]
JudgeUrlOption = Annotated[
    str | None,
    typer.Option(help="OpenAI-compatible base URL (vLLM, Ollama, llama.cpp, OpenAI)."),
]
JudgeModelOption = Annotated[str | None, typer.Option(help="Judge model name at that URL.")]
JudgeLocalOption = Annotated[
    str | None, typer.Option(help="A local HF model (Hub id/folder) as the judge instead.")
]
JudgeConcurrencyOption = Annotated[int, typer.Option(help="Judge requests in flight.")]
JudgeRetriesOption = Annotated[int, typer.Option(help="Retries per judge request.")]
JudgeTimeoutOption = Annotated[float, typer.Option(help="Seconds one judge request may take.")]
JudgeDeadlineOption = Annotated[
    float | None,
    typer.Option(help="Seconds all judging may take; later items fail at once."),
]
JudgeMaxFailuresOption = Annotated[
    int | None,
    typer.Option(help="Failed judgements tolerated before exit code 3 (default 0)."),
]
JudgeCacheOption = Annotated[
    Path | None, typer.Option(help="Judgement cache file (default: the yapo cache).")
]
NoJudgeCacheOption = Annotated[bool, typer.Option(help="Do not read or write the cache.")]
TaskOption = Annotated[
    str | None,
    typer.Option(
        help="A BiPO behaviour task (power-seeking, wealth-seeking, hallucination, "
        "jailbreak) instead of cultural MCQs; --data is then BiPO's data folder. "
        "Same as `yapo behaviour` at multipliers -λ, 0, +λ."
    ),
]
SweepMultipliersOption = Annotated[
    str, typer.Option(help="Comma-separated multipliers λ, e.g. -2,-1,0,1,2.")
]
ChooseOption = Annotated[
    bool,
    typer.Option(
        "--choose",
        help="Also measure fluency at each λ and choose each vector's λ, as "
        "--multiplier auto does (run it on validation questions, never the test ones).",
    ),
]
