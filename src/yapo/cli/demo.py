"""``yapo demo`` (the main job, :mod:`yapo.demo`) and ``yapo compare`` (:mod:`yapo.compare`)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Annotated

import typer

from yapo.cli.options import (
    DEFAULT_GRID,
    SELECTION,
    AllowUnsteeredOption,
    FluencyEveryPointOption,
    FluencyPromptsOption,
    MaxNllIncreaseOption,
    MaxRepetitionOption,
    ModelOption,
    MultiplierOption,
    NoCacheOption,
    SelectGridOption,
    SelectMetricOption,
    StrictOption,
    config_help,
    parse_multiplier,
    selection_config,
)
from yapo.compare import CompareConfig, comparison_training
from yapo.demo import DemoConfig
from yapo.methods.registry import parse_methods

COMPARE = CompareConfig()  # the one home of the compare defaults and their help
DEMO = DemoConfig()  # and of the demo ones
TRAINING = COMPARE.training  # the comparison's training defaults


def _help(name: str) -> str:
    return config_help(CompareConfig, name)


MethodsOption = Annotated[str, typer.Option(help=_help("methods"))]
COMPARE_METHODS_TEXT = ",".join(COMPARE.methods)
DEMO_METHODS_TEXT = ",".join(DEMO.methods)
CompareSaeOption = Annotated[str, typer.Option(help=_help("sae"))]
LayerOption = Annotated[int | None, typer.Option(help=_help("layer"))]
PairPolicyOption = Annotated[str, typer.Option(help=_help("pair_policy"))]


def register(app: typer.Typer) -> None:
    app.command("demo")(demo_command)
    app.command("compare")(compare_command)


def demo_command(
    out: Annotated[Path, typer.Option(help="Folder for runs, evaluation and report.")] = Path(
        "runs/demo"
    ),
    country: Annotated[str, typer.Option(help=config_help(DemoConfig, "country"))] = DEMO.country,
    languages: Annotated[
        str | None, typer.Option(help="Comma-separated, e.g. en,ar (default: both).")
    ] = None,
    methods: MethodsOption = DEMO_METHODS_TEXT,
    epochs: Annotated[int | None, typer.Option(help="Epochs for YaPO and BiPO.")] = None,
    questions: Annotated[
        int | None,
        typer.Option(help="Questions of the country to use, half held out (0 = all 42)."),
    ] = None,
    multiplier: MultiplierOption = str(DEMO.multiplier),
    select_grid: SelectGridOption = DEFAULT_GRID,
    select_metric: SelectMetricOption = SELECTION.metric,
    max_nll_increase: MaxNllIncreaseOption = SELECTION.max_nll_increase,
    max_repetition: MaxRepetitionOption = SELECTION.max_repetition,
    fluency_prompts: FluencyPromptsOption = SELECTION.fluency_prompts,
    fluency_every_point: FluencyEveryPointOption = SELECTION.fluency_every_point,
    allow_unsteered: AllowUnsteeredOption = SELECTION.allow_unsteered,
    pair_policy: PairPolicyOption = DEMO.pair_policy,
    model: ModelOption = DEMO.model,
    sae: CompareSaeOption = DEMO.sae,
    layer: LayerOption = DEMO.layer,
    quick: Annotated[bool, typer.Option(help="Reduced run (what CI does).")] = False,
    no_cache: NoCacheOption = not DEMO.shared_lower,
) -> None:
    """Train YaPO, BiPO, CAA and SAS for one country and compare them with no steering."""
    from yapo.demo import parse_languages, run_demo

    local = {"Egypt": "ar", "Morocco": "ar", "Mexico": "es", "Spain": "es"}
    chosen_languages = (
        tuple(parse_languages(languages)) if languages else ("en", local.get(country, "en"))
    )
    overrides: dict[str, object] = {
        "country": country,
        "languages": chosen_languages,
        "methods": parse_methods(methods),
        "multiplier": parse_multiplier(multiplier),
        "pair_policy": pair_policy,
        "shared_lower": not no_cache,
        "model": model,
        "sae": sae,
        "layer": layer,
    }
    if not quick or select_grid != DEFAULT_GRID:
        overrides["selection"] = selection_config(
            select_grid, select_metric, max_nll_increase, max_repetition, fluency_prompts
        )
    if questions is not None:
        overrides["max_questions"] = questions or None
    settings = DemoConfig.quick(**overrides) if quick else DemoConfig(**overrides)  # type: ignore[arg-type]
    if epochs is not None:
        settings.training = replace(settings.training, epochs=epochs)
    if fluency_every_point or allow_unsteered:
        settings.selection = replace(
            settings.selection,
            fluency_every_point=fluency_every_point,
            allow_unsteered=allow_unsteered,
        )
    settings.validate()
    result = run_demo(out, settings, log=lambda m: typer.echo(m, err=True))
    typer.echo(result.table)
    typer.echo(f"demo finished in {result.seconds:.0f} s; report: {result.report}")


def compare_command(
    data: Annotated[
        str,
        typer.Option(
            "--data", "-d", help="Cultural MCQ file/dataset (e.g. from convert-blend) or 'demo'."
        ),
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder.")],
    countries: Annotated[
        str | None, typer.Option(help="Comma-separated countries (default: all in the data).")
    ] = None,
    languages: Annotated[
        str | None, typer.Option(help="Comma-separated languages to keep (default: all).")
    ] = None,
    methods: MethodsOption = COMPARE_METHODS_TEXT,
    test_fraction: Annotated[
        float, typer.Option(help=_help("test_fraction"))
    ] = COMPARE.test_fraction,
    validation_fraction: Annotated[
        float, typer.Option(help=_help("validation_fraction"))
    ] = COMPARE.validation_fraction,
    questions: Annotated[
        int | None, typer.Option(help=_help("max_questions"))
    ] = COMPARE.max_questions,
    pair_policy: PairPolicyOption = COMPARE.pair_policy,
    # The training options say what the comparison does with them (YaPO and BiPO only);
    # their defaults are the comparison's training config.
    epochs: Annotated[int, typer.Option(help="Epochs for YaPO and BiPO.")] = TRAINING.epochs,
    lr: Annotated[
        float, typer.Option(help="Relative learning rate for YaPO and BiPO.")
    ] = TRAINING.learning_rate,
    warmup_steps: Annotated[
        int | None, typer.Option(help="Warm-up steps (default: a fraction of the run).")
    ] = TRAINING.warmup_steps,
    batch_size: Annotated[
        int, typer.Option(help="Pairs per step for YaPO and BiPO.")
    ] = TRAINING.batch_size,
    early_stopping_patience: Annotated[
        int | None,
        typer.Option(help="Stop YaPO/BiPO after N validation evaluations without improvement."),
    ] = TRAINING.early_stopping_patience,
    multiplier: MultiplierOption = str(COMPARE.multiplier),
    select_grid: SelectGridOption = DEFAULT_GRID,
    select_metric: SelectMetricOption = SELECTION.metric,
    max_nll_increase: MaxNllIncreaseOption = SELECTION.max_nll_increase,
    max_repetition: MaxRepetitionOption = SELECTION.max_repetition,
    fluency_prompts: FluencyPromptsOption = SELECTION.fluency_prompts,
    fluency_every_point: FluencyEveryPointOption = SELECTION.fluency_every_point,
    allow_unsteered: AllowUnsteeredOption = SELECTION.allow_unsteered,
    model: ModelOption = COMPARE.model,
    sae: CompareSaeOption = COMPARE.sae,
    layer: LayerOption = COMPARE.layer,
    seed: Annotated[int, typer.Option(help="Seed of the split and of training.")] = TRAINING.seed,
    retrain: Annotated[bool, typer.Option(help=_help("retrain"))] = COMPARE.retrain,
    strict: StrictOption = True,
    no_cache: NoCacheOption = not COMPARE.shared_lower,
) -> None:
    """Per country: train each method on its training questions, compare on held-out ones."""
    from yapo.cli.evaluate import load_mcq_data
    from yapo.compare import run_comparison
    from yapo.demo import parse_languages

    selection = (
        select_grid,
        select_metric,
        max_nll_increase,
        max_repetition,
        fluency_prompts,
        fluency_every_point,
        allow_unsteered,
    )
    training = (epochs, warmup_steps, lr, batch_size, early_stopping_patience)
    split = (test_fraction, validation_fraction, questions, seed)
    steering = (model, sae, layer, multiplier, not no_cache)
    settings = _compare_config(methods, pair_policy, split, training, steering, selection, retrain)
    items, load_report = load_mcq_data(data, strict)
    result = run_comparison(
        items,
        out,
        settings,
        countries=parse_languages(countries) if countries else None,
        languages=parse_languages(languages) if languages else None,
        log=lambda m: typer.echo(m, err=True),
        extra_settings={"data": data, "load_report": load_report},
    )
    typer.echo(result.table)
    typer.echo(f"comparison finished in {result.seconds:.0f} s; report: {result.report}")


def _compare_config(
    methods: str,
    pair_policy: str,
    split: tuple[float, float, int | None, int],
    training: tuple[int, int | None, float | None, int | None, int | None],
    steering: tuple[str, str, int | None, str, bool],
    selection: tuple[str, str, float | None, float | None, int, bool, bool],
    retrain: bool,
) -> CompareConfig:
    """The checked :class:`CompareConfig` of ``yapo compare``'s options, built in one place.

    The options come grouped as the command passes them: ``split`` is (test fraction,
    validation fraction, questions, seed), ``training`` (epochs, warm-up steps, lr, batch
    size, patience), ``steering`` (model, SAE, layer, multiplier, shared lower pass) and
    ``selection`` the λ-selection options of :func:`selection_config`.
    """
    test_fraction, validation_fraction, questions, seed = split
    epochs, warmup_steps, lr, batch_size, early_stopping_patience = training
    model, sae, layer, multiplier, shared_lower = steering
    settings = CompareConfig(
        methods=parse_methods(methods),
        test_fraction=test_fraction,
        validation_fraction=validation_fraction,
        pair_policy=pair_policy,
        training=comparison_training(
            epochs=epochs,
            warmup_steps=warmup_steps,
            learning_rate=lr,
            batch_size=batch_size,
            early_stopping_patience=early_stopping_patience,
            seed=seed,
        ),
        multiplier=parse_multiplier(multiplier),
        selection=selection_config(*selection),
        max_questions=questions,
        shared_lower=shared_lower,
        model=model,
        sae=sae,
        layer=layer,
        retrain=retrain,
    )
    settings.validate()
    return settings
