"""Evaluation commands: ``eval`` (side-by-side benchmark), ``sweep`` (λ curves), ``report``."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer

from yapo.cli.eval_options import (
    AlphaOption,
    BootstrapOption,
    ChoicesOption,
    ChooseOption,
    ConfidenceOption,
    CountriesOption,
    DataOption,
    DirectionOption,
    JudgeCacheOption,
    JudgeConcurrencyOption,
    JudgeDeadlineOption,
    JudgeLocalOption,
    JudgeMaxFailuresOption,
    JudgeModelOption,
    JudgeRetriesOption,
    JudgeTimeoutOption,
    JudgeUrlOption,
    LimitOption,
    MaxNewOption,
    ModeOption,
    NoJudgeCacheOption,
    NormalizeOption,
    OpenDataOption,
    SeedOption,
    SweepMultipliersOption,
    TaskOption,
    UnitOption,
    ValidationDataOption,
    VectorOption,
)
from yapo.cli.options import (
    DEFAULT_GRID,
    SELECTION,
    AllowUnsteeredOption,
    BatchOption,
    ChatOption,
    DeviceOption,
    DtypeOption,
    FluencyEveryPointOption,
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
    csv_items,
    parse_chat,
    parse_multiplier,
    selection_config,
)
from yapo.data.split import filter_countries
from yapo.errors import YapoError


def register(app: typer.Typer) -> None:
    app.command("eval")(eval_command)
    app.command("sweep")(sweep_command)
    app.command("report")(report_command)


def _log(message: str) -> None:
    typer.echo(message, err=True)


def _select(records: list[Any], countries: str | None, limit: int | None) -> list[Any]:
    """``--countries`` then ``--limit``: the first N items of the countries asked for."""
    records = filter_countries(records, csv_items(countries) if countries else None)
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
    judges: tuple[str | None, str | None, str | None],
    limits: tuple[int, int, float, float | None],
    cache_path: Path | None,
    no_cache: bool,
    dtype: str | None,
    device: str | None,
) -> Any:
    """The judge ``(url, model, local)`` names (None: none), with its request ``limits``.

    ``limits`` is ``(concurrency, retries, timeout, deadline)`` for an OpenAI-compatible one.
    """
    from yapo.evaluate.judge import JudgeCache, LocalJudge, OpenAIJudge
    from yapo.models.loading import cache_dir

    judge_url, judge_model, judge_local = judges
    concurrency, retries, timeout, deadline = limits
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
    validation_data: ValidationDataOption = None,
    select_grid: SelectGridOption = DEFAULT_GRID,
    select_metric: SelectMetricOption = SELECTION.metric,
    max_nll_increase: MaxNllIncreaseOption = SELECTION.max_nll_increase,
    max_repetition: MaxRepetitionOption = SELECTION.max_repetition,
    fluency_prompts: FluencyPromptsOption = SELECTION.fluency_prompts,
    fluency_every_point: FluencyEveryPointOption = SELECTION.fluency_every_point,
    allow_unsteered: AllowUnsteeredOption = SELECTION.allow_unsteered,
    direction: DirectionOption = 1,
    sae: SaeOption = None,
    open_data: OpenDataOption = None,
    judge_url: JudgeUrlOption = None,
    judge_model: JudgeModelOption = None,
    judge_local: JudgeLocalOption = None,
    judge_concurrency: JudgeConcurrencyOption = 4,
    judge_retries: JudgeRetriesOption = 3,
    judge_timeout: JudgeTimeoutOption = 120.0,
    judge_deadline: JudgeDeadlineOption = None,
    judge_max_failures: JudgeMaxFailuresOption = 0,
    judge_cache: JudgeCacheOption = None,
    no_judge_cache: NoJudgeCacheOption = False,
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
    task: TaskOption = None,
    no_cache: NoCacheOption = False,
) -> None:
    """Compare no steering and each vector on cultural MCQs (and open-ended questions)."""
    from yapo.evaluate.benchmark import make_conditions
    from yapo.models import load_model

    judges = (judge_url, judge_model, judge_local)
    if task is not None:
        behaviour = _behaviour_config(
            vector, multiplier, direction, chat, batch_size, max_new_tokens, seed, no_cache
        )
        _behaviour_task(
            task, out, model, data, vector, sae, behaviour, limit, judges, dtype, device
        )
        return
    if not data and not open_data:
        raise YapoError("give --data (MCQs, or 'demo') and/or --open-data")
    mcq_config = _mcq_config(
        mode, choices, normalize, chat, batch_size, max_new_tokens, shared_lower=not no_cache
    )
    metrics = _metric_options(unit, alpha, bootstrap, confidence, seed)
    items, questions, settings = _eval_data(model, data, open_data, countries, limit, strict)
    limits = (judge_concurrency, judge_retries, judge_timeout, judge_deadline)
    judge = _judge(judges, limits, judge_cache, no_judge_cache, dtype, device)
    if questions and judge is None:
        raise YapoError("--open-data needs a judge: --judge-url + --judge-model, or --judge-local")
    strength = parse_multiplier(multiplier)
    vectors = load_vectors(vector or [], sae)
    grid = (
        select_grid,
        select_metric,
        max_nll_increase,
        max_repetition,
        fluency_prompts,
        fluency_every_point,
        allow_unsteered,
    )
    selection = selection_config(*grid) if strength == "auto" else None
    _check_validation(strength, validation_data, vectors)
    lm, tokenizer = load_model(model, dtype=dtype, device=device)
    open_config = _open_config(chat, batch_size, max_new_tokens)
    scoring = _Scoring(mcq_config, metrics, direction, open_config)
    if selection is None:
        conditions = make_conditions(vectors, float(strength), direction)
    else:
        validation = _select(load_mcq_data(str(validation_data), strict)[0], countries, None)
        conditions, settings["chosen_multipliers"] = _chosen_conditions(
            lm, tokenizer, validation, vectors, selection, scoring, out
        )
    result = _benchmark(lm, tokenizer, conditions, items, questions, judge, scoring, settings)
    _write_eval(result, out, judge_max_failures)


@dataclass(frozen=True)
class _Scoring:
    """How every condition is scored: the λ selection and the evaluation share it."""

    mcq: Any  # McqConfig and MetricConfig: imported lazily, so `yapo --help` needs no torch
    metrics: Any
    direction: int
    open: Any = None  # OpenConfig: only the evaluation generates open-ended answers


def _eval_data(
    model: str,
    data: str,
    open_data: str | None,
    countries: str | None,
    limit: int | None,
    strict: bool,
) -> tuple[list[Any], list[Any], dict[str, Any]]:
    """The MCQs and open questions ``eval`` scores, and the settings that record them."""
    settings: dict[str, Any] = {"model_name": model, "data": data or None, "open_data": open_data}
    items: list[Any] = []
    if data:
        items, settings["mcq_load_report"] = load_mcq_data(data, strict)
        items = _select(items, countries, limit)
    questions: list[Any] = []
    if open_data:
        questions, settings["open_load_report"] = load_open_data(open_data, strict)
        questions = _select(questions, countries, limit)
    return items, questions, settings


def _check_validation(
    strength: float | str, validation_data: str | None, vectors: list[Any]
) -> None:
    """``--validation-data`` goes with ``--multiplier auto``, which needs vectors to tune."""
    if strength == "auto":
        if not validation_data:
            raise YapoError(
                "--multiplier auto chooses λ on validation questions: give --validation-data "
                "(never the test questions), or a fixed --multiplier"
            )
        if not vectors:
            raise YapoError("--multiplier auto needs at least one --vector")
    elif validation_data:
        raise YapoError("--validation-data is used only with --multiplier auto")


def _chosen_conditions(
    lm: Any,
    tokenizer: Any,
    validation: list[Any],
    vectors: list[tuple[str, Any, str]],
    selection: Any,
    scoring: _Scoring,
    out: Path,
) -> tuple[list[Any], dict[str, Any]]:
    """No steering plus each vector at the λ chosen on ``validation`` (written to OUT/selection)."""
    from yapo.evaluate.benchmark import Condition, make_conditions
    from yapo.evaluate.sweep import write_sweep

    chosen = _choose(lm, tokenizer, validation, vectors, selection, scoring)
    write_sweep(chosen, Path(out) / "selection")
    assert chosen.selection is not None
    conditions = make_conditions([], 0.0)
    conditions += [
        Condition(name, v, float(chosen.selection[name]["multiplier"]), scoring.direction, source)
        for name, v, source in vectors
    ]
    return conditions, chosen.selection


def _open_config(chat: str, batch_size: int, max_new_tokens: int) -> Any:
    from yapo.evaluate.openended import OpenConfig

    return OpenConfig(
        chat=parse_chat(chat),  # type: ignore[arg-type]
        batch_size=batch_size,
        max_new_tokens=max_new_tokens,
    )


def _benchmark(
    lm: Any,
    tokenizer: Any,
    conditions: list[Any],
    items: list[Any],
    questions: list[Any],
    judge: Any,
    scoring: _Scoring,
    settings: dict[str, Any],
) -> Any:
    """Score every condition on the test MCQs and open questions (one benchmark result)."""
    from yapo.evaluate.benchmark import run_benchmark

    return run_benchmark(
        lm,
        tokenizer,
        conditions,
        mcq_items=items,
        open_questions=questions,
        judge=judge,
        mcq_config=scoring.mcq,
        open_config=scoring.open,
        metrics=scoring.metrics,
        settings=settings,
        log=_log,
    )


def _write_eval(result: Any, out: Path, judge_max_failures: int | None) -> None:
    """Write OUT/results.json and the tables, print them, and exit on judge failures."""
    from yapo.evaluate.benchmark import write_benchmark

    folder = write_benchmark(result, out)
    typer.echo((folder / "tables.md").read_text(encoding="utf-8"))
    typer.echo(f"wrote {folder}/results.json, tables.md, tables.json", err=True)
    _judge_exit(result, judge_max_failures)


def _behaviour_config(
    vector: list[str] | None,
    multiplier: str,
    direction: int,
    chat: str,
    batch_size: int,
    max_new_tokens: int,
    seed: int,
    no_cache: bool,
) -> Any:
    """``eval --task``'s settings: one vector, scored at -λ, 0 and +λ."""
    from yapo.cli.analysis import behaviour_config

    if vector and len(vector) > 1:
        raise YapoError("--task evaluates one vector at a time; give a single --vector")
    fixed = parse_multiplier(multiplier)
    if not isinstance(fixed, float):
        raise YapoError("--task sweeps -λ, 0, +λ: give a number as --multiplier")
    return behaviour_config(
        [-fixed, 0.0, fixed], direction, chat, batch_size, max_new_tokens, seed, no_cache
    )


def _behaviour_task(
    task: str,
    out: Path,
    model: str,
    data: str,
    vector: list[str] | None,
    sae: str | None,
    config: Any,
    limit: int | None,
    judge: tuple[str | None, str | None, str | None],
    dtype: str | None,
    device: str | None,
) -> None:
    """``eval --task``: the behaviour evaluation of ``yapo behaviour`` at -λ, 0, +λ."""
    from yapo.cli.analysis import run_behaviour_task

    path = Path(vector[0].split("=", 1)[-1]) if vector else None
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
    multipliers: SweepMultipliersOption = "-2,-1,0,1,2",
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
    choose: ChooseOption = False,
    max_nll_increase: MaxNllIncreaseOption = SELECTION.max_nll_increase,
    max_repetition: MaxRepetitionOption = SELECTION.max_repetition,
    fluency_prompts: FluencyPromptsOption = SELECTION.fluency_prompts,
    fluency_every_point: FluencyEveryPointOption = SELECTION.fluency_every_point,
    allow_unsteered: AllowUnsteeredOption = SELECTION.allow_unsteered,
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
            fluency_every_point,
            allow_unsteered,
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
    settings = {"model_name": model, "data": data, "mcq_load_report": report}
    scoring = _Scoring(mcq_config, metrics, direction)
    if selection is not None:
        result = _choose(lm, tokenizer, items, vectors, selection, scoring)
        result.settings.update(settings)
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
            settings=settings,
            log=_log,
        )
    folder = write_sweep(result, out)
    typer.echo((folder / "sweep.md").read_text(encoding="utf-8"))
    typer.echo(f"wrote {folder}/sweep.json, sweep.md, sweep.png", err=True)


def _choose(
    lm: Any,
    tokenizer: Any,
    items: list[Any],
    vectors: list[tuple[str, Any, str]],
    selection: Any,
    scoring: _Scoring,
) -> Any:
    """``--choose`` and ``--multiplier auto``: fluency and scores per λ, each vector's λ."""
    from yapo.evaluate.selection import select_multipliers

    return select_multipliers(
        lm,
        tokenizer,
        items,
        vectors,
        selection,
        direction=scoring.direction,
        mcq_config=scoring.mcq,
        metrics=scoring.metrics,
        log=_log,
    )


def report_command(
    run_dirs: Annotated[list[Path], typer.Argument(help="Training, eval and sweep run folders.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Report folder.")] = Path("report"),
) -> None:
    """Gather runs into one Markdown report with loss curves, tables and λ curves."""
    from yapo.gather import build_report

    path = build_report(list(run_dirs), out)
    typer.echo(str(path))
