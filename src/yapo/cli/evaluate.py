"""Evaluation commands: ``eval`` (side-by-side benchmark), ``sweep`` (λ curves), ``report``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from yapo.cli.options import (
    DEFAULT_GRID,
    SELECTION,
    BatchOption,
    ChatOption,
    DeviceOption,
    DtypeOption,
    FluencyPromptsOption,
    MaxNllIncreaseOption,
    MaxRepetitionOption,
    ModelOption,
    MultiplierOption,
    NoCacheOption,
    OutOption,
    SaeOption,
    SelectGridOption,
    SelectMetricOption,
    StrictOption,
    parse_chat,
    parse_multiplier,
    selection_config,
)
from yapo.errors import YapoError

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


def register(app: typer.Typer) -> None:
    app.command("eval")(eval_command)
    app.command("sweep")(sweep_command)
    app.command("report")(report_command)


def _log(message: str) -> None:
    typer.echo(message, err=True)


def _select(records: list[Any], countries: str | None, limit: int | None) -> list[Any]:
    if countries:
        wanted = {c.strip() for c in countries.split(",") if c.strip()}
        present = {r.country for r in records}
        missing = sorted(wanted - present)
        if missing:
            raise YapoError(
                f"no items for {', '.join(missing)}; the data has {', '.join(sorted(present))}"
            )
        records = [r for r in records if r.country in wanted]
    if limit is not None:
        if limit < 1:
            raise YapoError(f"--limit must be at least 1, got {limit}")
        records = records[:limit]
    return records


def load_mcq_data(data: str, strict: bool) -> tuple[list[Any], dict[str, Any] | None]:
    """MCQ items from a file/dataset or the demo set, with the loader's report."""
    report: Any = None  # the shipped demo set's results have never carried a load report
    if data == "demo":
        from yapo.data.demo import load_demo_mcq

        items, _ = load_demo_mcq()
    else:
        from yapo.data.cultural import load_mcq

        items, report = load_mcq(data, strict=strict)
    if report is not None and getattr(report, "problems", None):
        _log(report.summary())
    return items, (report.to_json() if report is not None else None)


def load_open_data(data: str, strict: bool) -> tuple[list[Any], dict[str, Any] | None]:
    """Open-ended questions from a file/dataset, or the demo set."""
    report: Any = None  # as for the MCQs: no load report for the demo set
    if data == "demo":
        from yapo.data.demo import load_demo_open

        questions, _ = load_demo_open()
    else:
        from yapo.data.cultural import load_open

        questions, report = load_open(data, strict=strict)
    if report is not None and getattr(report, "problems", None):
        _log(report.summary())
    return questions, (report.to_json() if report is not None else None)


def load_vectors(specs: list[str], sae: str | None) -> list[tuple[str, Any, str]]:
    """``[NAME=]DIR`` specs → ``(name, vector, source)``; names default to the method."""
    from yapo.sae import load_sae
    from yapo.vectors import load_vector

    sae_obj = load_sae(sae) if sae else None
    loaded = []
    for spec in specs:
        name, _, path = spec.rpartition("=") if "=" in spec else ("", "", spec)
        vector = load_vector(Path(path), sae=sae_obj)
        loaded.append((name, vector, path))
    methods = [v.meta.method for name, v, _ in loaded if not name]
    named = []
    for name, vector, path in loaded:
        if not name:
            name = vector.meta.method
            if methods.count(name) > 1:
                name = f"{name}:{Path(path).name}"
        named.append((name, vector, path))
    return named


def _mcq_config(
    mode: str,
    choices: str,
    normalize: bool,
    chat: str,
    batch_size: int,
    max_new_tokens: int,
    shared_lower: bool = True,
) -> Any:
    from yapo.evaluate.mcq import McqConfig

    config = McqConfig(
        mode=mode,  # type: ignore[arg-type]
        choices=choices,  # type: ignore[arg-type]
        normalize=normalize,
        chat=parse_chat(chat),  # type: ignore[arg-type]
        batch_size=batch_size,
        max_new_tokens=max_new_tokens,
        shared_lower=shared_lower,
    )
    config.validate()
    return config


def _metric_options(unit: str, alpha: float, bootstrap: int, confidence: float, seed: int) -> Any:
    from yapo.evaluate.benchmark import MetricConfig
    from yapo.evaluate.bootstrap import check_settings
    from yapo.evaluate.metrics import UNITS, check_alpha

    if unit not in UNITS:
        raise YapoError(f"--unit must be one of {', '.join(UNITS)}, got {unit!r}")
    check_alpha(alpha)
    check_settings(bootstrap, confidence)
    return MetricConfig(
        unit=unit,  # type: ignore[arg-type]
        alpha=alpha,
        samples=bootstrap,
        confidence=confidence,
        seed=seed,
    )


def _judge(
    judge_url: str | None,
    judge_model: str | None,
    judge_local: str | None,
    concurrency: int,
    retries: int,
    cache_path: Path | None,
    no_cache: bool,
    dtype: str | None,
    device: str | None,
    timeout: float = 120.0,
    deadline: float | None = None,
) -> Any:
    from yapo.evaluate.judge import JudgeCache, LocalJudge, OpenAIJudge
    from yapo.models.loading import cache_dir

    if judge_local and (judge_url or judge_model):
        raise YapoError("use either --judge-local or --judge-url/--judge-model, not both")
    if not (judge_local or judge_model):
        if judge_url:
            raise YapoError("--judge-url needs --judge-model (the model name the server serves)")
        return None
    cache = None
    if not no_cache:
        cache = JudgeCache(cache_path or cache_dir() / "judge" / "cache.jsonl")
    if judge_local:
        from yapo.models import load_model

        model, tokenizer = load_model(judge_local, dtype=dtype, device=device)
        return LocalJudge(model, tokenizer, name=judge_local, cache=cache)
    return OpenAIJudge(
        str(judge_model),
        judge_url,
        concurrency=concurrency,
        max_retries=retries,
        cache=cache,
        timeout=timeout,
        deadline=deadline,
    )


def eval_command(
    out: OutOption,
    model: ModelOption = "default",
    data: DataOption = "",
    vector: VectorOption = None,
    multiplier: MultiplierOption = "1",
    validation_data: Annotated[
        str | None,
        typer.Option(
            help="Validation MCQs (never the test ones) on which --multiplier auto chooses "
            "each vector's λ, e.g. a compare run's validation_items.jsonl."
        ),
    ] = None,
    select_grid: SelectGridOption = DEFAULT_GRID,
    select_metric: SelectMetricOption = SELECTION.metric,
    max_nll_increase: MaxNllIncreaseOption = SELECTION.max_nll_increase,
    max_repetition: MaxRepetitionOption = SELECTION.max_repetition,
    fluency_prompts: FluencyPromptsOption = SELECTION.fluency_prompts,
    direction: DirectionOption = 1,
    sae: SaeOption = None,
    open_data: Annotated[
        str | None, typer.Option(help="Open-ended questions (file/dataset) to generate and judge.")
    ] = None,
    judge_url: Annotated[
        str | None,
        typer.Option(help="OpenAI-compatible base URL (vLLM, Ollama, llama.cpp, OpenAI)."),
    ] = None,
    judge_model: Annotated[str | None, typer.Option(help="Judge model name at that URL.")] = None,
    judge_local: Annotated[
        str | None, typer.Option(help="A local HF model (Hub id/folder) as the judge instead.")
    ] = None,
    judge_concurrency: Annotated[int, typer.Option(help="Judge requests in flight.")] = 4,
    judge_retries: Annotated[int, typer.Option(help="Retries per judge request.")] = 3,
    judge_timeout: Annotated[
        float, typer.Option(help="Seconds one judge request may take.")
    ] = 120.0,
    judge_deadline: Annotated[
        float | None,
        typer.Option(help="Seconds all judging may take; later items fail at once."),
    ] = None,
    judge_max_failures: Annotated[
        int | None,
        typer.Option(help="Failed judgements tolerated before exit code 3 (default 0)."),
    ] = 0,
    judge_cache: Annotated[
        Path | None, typer.Option(help="Judgement cache file (default: the yapo cache).")
    ] = None,
    no_judge_cache: Annotated[bool, typer.Option(help="Do not read or write the cache.")] = False,
    mode: ModeOption = "loglik",
    choices: ChoicesOption = "text",
    normalize: NormalizeOption = False,
    chat: ChatOption = "auto",
    batch_size: BatchOption = 16,
    max_new_tokens: MaxNewOption = 128,
    limit: LimitOption = None,
    countries: CountriesOption = None,
    unit: UnitOption = "country",
    alpha: AlphaOption = 1.0,
    bootstrap: BootstrapOption = 1000,
    confidence: ConfidenceOption = 0.95,
    seed: SeedOption = 0,
    dtype: DtypeOption = None,
    device: DeviceOption = None,
    strict: StrictOption = True,
    task: Annotated[
        str | None,
        typer.Option(
            help="A BiPO behaviour task (power-seeking, wealth-seeking, hallucination, "
            "jailbreak) instead of cultural MCQs; --data is then BiPO's data folder. "
            "Same as `yapo behaviour` at multipliers -λ, 0, +λ."
        ),
    ] = None,
    no_cache: NoCacheOption = False,
) -> None:
    """Compare no steering and each vector on cultural MCQs (and open-ended questions)."""
    from yapo.evaluate.benchmark import (
        Condition,
        make_conditions,
        run_benchmark,
        write_benchmark,
    )
    from yapo.evaluate.openended import OpenConfig
    from yapo.models import load_model

    if task is not None:
        _behaviour_task(
            task,
            out,
            model,
            data,
            vector,
            sae,
            multiplier,
            direction,
            limit,
            seed,
            (judge_url, judge_model, judge_local),
            max_new_tokens,
            chat,
            batch_size,
            dtype,
            device,
            no_cache,
        )
        return
    if not data and not open_data:
        raise YapoError("give --data (MCQs, or 'demo') and/or --open-data")
    mcq_config = _mcq_config(
        mode, choices, normalize, chat, batch_size, max_new_tokens, shared_lower=not no_cache
    )
    metrics = _metric_options(unit, alpha, bootstrap, confidence, seed)
    settings: dict[str, Any] = {"model_name": model, "data": data or None, "open_data": open_data}
    items: list[Any] = []
    if data:
        items, settings["mcq_load_report"] = load_mcq_data(data, strict)
        items = _select(items, countries, limit)
    questions: list[Any] = []
    if open_data:
        questions, settings["open_load_report"] = load_open_data(open_data, strict)
        questions = _select(questions, countries, limit)
    judge = _judge(
        judge_url,
        judge_model,
        judge_local,
        judge_concurrency,
        judge_retries,
        judge_cache,
        no_judge_cache,
        dtype,
        device,
        timeout=judge_timeout,
        deadline=judge_deadline,
    )
    if questions and judge is None:
        raise YapoError("--open-data needs a judge: --judge-url + --judge-model, or --judge-local")
    strength = parse_multiplier(multiplier)
    vectors = load_vectors(vector or [], sae)
    selection = None
    if strength == "auto":
        selection = selection_config(
            select_grid, select_metric, max_nll_increase, max_repetition, fluency_prompts
        )
        if not validation_data:
            raise YapoError(
                "--multiplier auto chooses λ on validation questions: give --validation-data "
                "(never the test questions), or a fixed --multiplier"
            )
        if not vectors:
            raise YapoError("--multiplier auto needs at least one --vector")
    elif validation_data:
        raise YapoError("--validation-data is used only with --multiplier auto")
    lm, tokenizer = load_model(model, dtype=dtype, device=device)
    if selection is not None:
        from yapo.evaluate.selection import select_multipliers
        from yapo.evaluate.sweep import write_sweep

        assert validation_data is not None
        validation, _ = load_mcq_data(validation_data, strict)
        chosen = select_multipliers(
            lm,
            tokenizer,
            _select(validation, countries, None),
            vectors,
            selection,
            direction=direction,
            mcq_config=mcq_config,
            metrics=metrics,
            log=_log,
        )
        write_sweep(chosen, Path(out) / "selection")
        assert chosen.selection is not None
        settings["chosen_multipliers"] = chosen.selection
        conditions = make_conditions([], 0.0)
        conditions += [
            Condition(name, v, float(chosen.selection[name]["multiplier"]), direction, source)
            for name, v, source in vectors
        ]
    else:
        assert isinstance(strength, float)
        conditions = make_conditions(vectors, strength, direction)
    result = run_benchmark(
        lm,
        tokenizer,
        conditions,
        mcq_items=items,
        open_questions=questions,
        judge=judge,
        mcq_config=mcq_config,
        open_config=OpenConfig(
            chat=parse_chat(chat),  # type: ignore[arg-type]
            batch_size=batch_size,
            max_new_tokens=max_new_tokens,
        ),
        metrics=metrics,
        settings=settings,
        log=_log,
    )
    folder = write_benchmark(result, out)
    typer.echo((folder / "tables.md").read_text(encoding="utf-8"))
    typer.echo(f"wrote {folder}/results.json, tables.md, tables.json", err=True)
    _judge_exit(result, judge_max_failures)


def _behaviour_task(
    task: str,
    out: Path,
    model: str,
    data: str,
    vector: list[str] | None,
    sae: str | None,
    multiplier: str,
    direction: int,
    limit: int | None,
    seed: int,
    judge: tuple[str | None, str | None, str | None],
    max_new_tokens: int,
    chat: str,
    batch_size: int,
    dtype: str | None,
    device: str | None,
    no_cache: bool,
) -> None:
    """``eval --task``: the behaviour evaluation of ``yapo behaviour`` at -λ, 0, +λ."""
    from yapo.cli.analysis import run_behaviour_task
    from yapo.evaluate.behaviour import BehaviourConfig

    if vector and len(vector) > 1:
        raise YapoError("--task evaluates one vector at a time; give a single --vector")
    path = Path(vector[0].split("=", 1)[-1]) if vector else None
    fixed = parse_multiplier(multiplier)
    if not isinstance(fixed, float):
        raise YapoError("--task sweeps -λ, 0, +λ: give a number as --multiplier")
    config = BehaviourConfig(
        multipliers=[-fixed, 0.0, fixed],
        direction=direction,
        chat=parse_chat(chat),  # type: ignore[arg-type]
        batch_size=batch_size,
        max_new_tokens=max_new_tokens,
        seed=seed,
        shared_lower=not no_cache,
    )
    open_ended = bool(judge[0] or judge[2])  # a URL or a local judge: judged answers too
    data_path = Path(data) if data else None
    run_behaviour_task(
        task,
        data_path,
        out,
        model,
        path,
        sae,
        None,
        config,
        limit,
        judge if open_ended else None,
        dtype,
        device,
    )


def _judge_exit(result: Any, max_failures: int | None) -> None:
    """A summary of judge failures; exit 2 when all failed, 3 when more than tolerated."""
    from yapo.evaluate.judge import JudgeTally

    tally = JudgeTally()
    for condition in result.results:
        if condition.open is not None:
            tally.add(
                len(condition.open.answers),
                condition.open.failures,
                condition.open.failure_messages(3),
            )
    if not tally.failed:
        return
    _log(tally.summary())
    code = tally.exit_code(max_failures)  # raises when every judgement failed
    if code:
        _log(f"more than {max_failures} judgement(s) failed: exit code {code}")
        raise typer.Exit(code=code)


def sweep_command(
    out: OutOption,
    model: ModelOption = "default",
    data: DataOption = "demo",
    vector: VectorOption = None,
    multipliers: Annotated[
        str, typer.Option(help="Comma-separated multipliers λ, e.g. -2,-1,0,1,2.")
    ] = "-2,-1,0,1,2",
    direction: DirectionOption = 1,
    sae: SaeOption = None,
    mode: ModeOption = "loglik",
    choices: ChoicesOption = "text",
    normalize: NormalizeOption = False,
    chat: ChatOption = "auto",
    batch_size: BatchOption = 16,
    max_new_tokens: MaxNewOption = 128,
    limit: LimitOption = None,
    countries: CountriesOption = None,
    unit: UnitOption = "country",
    alpha: AlphaOption = 1.0,
    bootstrap: BootstrapOption = 1000,
    confidence: ConfidenceOption = 0.95,
    seed: SeedOption = 0,
    dtype: DtypeOption = None,
    device: DeviceOption = None,
    strict: StrictOption = True,
    no_cache: NoCacheOption = False,
    choose: Annotated[
        bool,
        typer.Option(
            "--choose",
            help="Also measure fluency at each λ and choose each vector's λ, as "
            "--multiplier auto does (run it on validation questions, never the test ones).",
        ),
    ] = False,
    max_nll_increase: MaxNllIncreaseOption = SELECTION.max_nll_increase,
    max_repetition: MaxRepetitionOption = SELECTION.max_repetition,
    fluency_prompts: FluencyPromptsOption = SELECTION.fluency_prompts,
    select_metric: SelectMetricOption = SELECTION.metric,
) -> None:
    """MCQ accuracy, RCA and PNLG against the multiplier λ for each vector (JSON + PNG).

    With --choose this is the λ selection of --multiplier auto on --data: fluency per λ,
    the chosen λ per vector (λ = 0 is always measured as the reference)."""
    from yapo.evaluate.sweep import parse_multipliers, run_sweep, write_sweep
    from yapo.models import load_model

    grid = parse_multipliers(multipliers)
    selection = None
    if choose:
        selection = selection_config(
            ",".join(f"{m:g}" for m in grid if m != 0.0) or ",",
            select_metric,
            max_nll_increase,
            max_repetition,
            fluency_prompts,
        )
    if not vector:
        raise YapoError("a sweep needs at least one --vector")
    mcq_config = _mcq_config(
        mode, choices, normalize, chat, batch_size, max_new_tokens, shared_lower=not no_cache
    )
    metrics = _metric_options(unit, alpha, bootstrap, confidence, seed)
    items, report = load_mcq_data(data, strict)
    items = _select(items, countries, limit)
    vectors = load_vectors(vector, sae)
    lm, tokenizer = load_model(model, dtype=dtype, device=device)
    if selection is not None:
        from yapo.evaluate.selection import select_multipliers

        result = select_multipliers(
            lm,
            tokenizer,
            items,
            vectors,
            selection,
            direction=direction,
            mcq_config=mcq_config,
            metrics=metrics,
            log=_log,
        )
        result.settings.update({"model_name": model, "data": data, "mcq_load_report": report})
    else:
        result = run_sweep(
            lm,
            tokenizer,
            items,
            vectors,
            grid,
            direction=direction,
            mcq_config=mcq_config,
            metrics=metrics,
            settings={"model_name": model, "data": data, "mcq_load_report": report},
            log=_log,
        )
    folder = write_sweep(result, out)
    typer.echo((folder / "sweep.md").read_text(encoding="utf-8"))
    typer.echo(f"wrote {folder}/sweep.json, sweep.md, sweep.png", err=True)


def report_command(
    run_dirs: Annotated[list[Path], typer.Argument(help="Training, eval and sweep run folders.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Report folder.")] = Path("report"),
) -> None:
    """Gather runs into one Markdown report with loss curves, tables and λ curves."""
    from yapo.gather import build_report

    path = build_report(list(run_dirs), out)
    typer.echo(str(path))
