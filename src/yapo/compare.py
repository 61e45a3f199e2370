"""Train every method per country and compare them with no steering: the paper's protocol.

The YaPO paper learns one steering vector per country (from that country's training
questions) and scores it on the same country's held-out questions, localized and
non-localized. :func:`run_comparison` does exactly that for any cultural MCQ data (the
demo's own, BLEnD converted by ``yapo data convert-blend``, the paper's Hub columns):

1. load the model and the SAE once; the steering layer is the SAE's layer;
2. per country: split its questions (all their languages and forms stay on one side),
   turn the training questions into preference pairs (correct vs Western option), train
   each method, evaluate no steering and each vector on the held-out questions;
3. merge the countries: each condition's predictions over all countries make one table
   (rows per country, per language and overall, with bootstrap intervals), so "YaPO"
   means "each country's own YaPO vector on that country's questions".

Output folder::

    OUT/comparison.json           settings, per-country sizes and timings
    OUT/eval/                     the merged tables (tables.md, results.json, predictions)
    OUT/<country>/runs/<method>/  each run folder (vector/, metrics.jsonl, loss.png)
    OUT/<country>/train_pairs.jsonl, test_items.jsonl   the split (for sweeps on it)
    OUT/<country>/eval/           that country's own evaluation
    OUT/report/report.md          loss curves and tables

A run folder that holds a vector trained with the same method, pairs, layer, SAE and
settings is reused rather than retrained (``retrain=True`` forces training); a YaPO or
BiPO run that was interrupted continues from its newest checkpoint. So an interrupted
comparison picks up where it stopped.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from yapo._config import config_field, nested_config
from yapo._io import write_json
from yapo.data.records import CulturalMCQ, PreferencePair
from yapo.data.split import filter_countries
from yapo.errors import YapoError
from yapo.evaluate.selection import SelectionConfig
from yapo.methods.preference import PreferenceConfig
from yapo.methods.registry import (
    DEFAULT_METHODS,
    METHODS,
    MethodSpec,
    check_methods,
    method_spec,
)
from yapo.methods.reuse import Action, decide

Log = Callable[[str], None]


def comparison_training(**changes: Any) -> PreferenceConfig:
    """The comparison's training settings (``changes`` over them): the one home of them.

    A comparison trains every optimized method of every country, so it runs 6 epochs
    rather than the trainer's 20 and stops after 2 validation evaluations without
    improvement (the best-validation vector is kept anyway); everything else is the
    trainer's default, e.g. a step size relative to the measured scale of the stream,
    so one default fits every model.
    """
    return replace(PreferenceConfig(epochs=6, early_stopping_patience=2), **changes)


@dataclass
class CompareConfig:
    """What is trained, how, and how strength is chosen.

    ``training`` holds the trainer settings of the optimized methods (YaPO, BiPO and
    their RePS variants; :func:`comparison_training`); CAA and SAS take the trainer's
    defaults. Its ``seed`` also draws the split. Each country's training questions are
    split again by question: ``validation_fraction`` of them are held out for early
    stopping (the run keeps its best-validation vector) and for choosing λ
    (``multiplier="auto"``, :mod:`yapo.evaluate.selection`); the test questions are
    scored once, at the chosen λ. ``pair_policy`` decides the rejected answer of each
    pair (``"model"``: the model's own preferred wrong option).
    """

    methods: tuple[str, ...] = config_field(
        DEFAULT_METHODS, f"Comma-separated subset of {','.join(METHODS)}."
    )
    test_fraction: float = config_field(
        0.5, "Share of each country's questions held out for the test."
    )
    validation_fraction: float = config_field(
        0.3,
        "Share of each country's training questions held out for early stopping "
        "and for choosing λ.",
    )
    pair_policy: str = config_field(
        "model",
        "Rejected answer of each training pair: model (the model's own preferred wrong "
        "option) | western | other_country | all.",
    )
    training: PreferenceConfig = nested_config(
        comparison_training,
        "Trainer settings of YaPO and BiPO (their seed also draws the split); CAA and "
        "SAS take the trainer's defaults.",
    )
    multiplier: float | str = config_field(
        "auto", "λ at evaluation: a number, or 'auto' (chosen on validation questions)."
    )
    selection: SelectionConfig = nested_config(
        SelectionConfig, "How 'auto' chooses each vector's λ on validation questions."
    )
    max_questions: int | None = config_field(
        None, "Use only the first N questions of each country."
    )
    shared_lower: bool = config_field(
        True,
        "Score the conditions from one shared pass of the blocks below the vectors' "
        "layer (False: a full forward each, the oracle).",
    )
    model: str = config_field("default", "Hub id, local folder, .gguf file, or 'default'.")
    sae: str = config_field("default", "SAE reference (default: the shipped one).")
    layer: int | None = config_field(None, "Steering layer (default: the SAE's layer).")
    retrain: bool = config_field(
        False, "Retrain even where a finished run with the same settings exists."
    )

    def validate(self) -> None:
        check_methods(self.methods)
        if not 0 < self.test_fraction < 1:
            raise YapoError(f"test_fraction must be in (0, 1), got {self.test_fraction}")
        if not 0 <= self.validation_fraction < 1:
            raise YapoError(
                f"validation_fraction must be in [0, 1), got {self.validation_fraction}"
            )
        if self.multiplier == "auto":
            if self.validation_fraction == 0:
                raise YapoError(
                    "--multiplier auto chooses λ on validation questions, but "
                    "--validation-fraction is 0; hold some out or give a fixed --multiplier"
                )
            self.selection.validate()
        elif isinstance(self.multiplier, str) or not math.isfinite(self.multiplier):
            raise YapoError(
                f"multiplier must be a finite number or 'auto', got {self.multiplier!r}"
            )
        from yapo.data.cultural import POLICIES

        if self.pair_policy not in POLICIES:
            raise YapoError(
                f"pair_policy must be one of {', '.join(POLICIES)}, got {self.pair_policy!r}"
            )
        self._validate_training()
        if self.max_questions is not None and self.max_questions < 2:
            raise YapoError("max_questions must be at least 2 (one to train, one to test)")

    def _validate_training(self) -> None:
        """The trainer's own checks, and the objective left to the method names."""
        self.training.validate()
        default = PreferenceConfig().objective
        if self.training.objective != default:
            raise YapoError(
                f"a comparison names the objective in the method (e.g. yapo-reps), so "
                f"training.objective must stay {default!r}, got {self.training.objective!r}"
            )


@dataclass
class ComparisonResult:
    out: Path
    report: Path
    seconds: float
    table: str
    layer: int
    timings: dict[str, float] = field(default_factory=dict)
    countries: dict[str, dict[str, int]] = field(default_factory=dict)


def country_folder_name(country: str) -> str:
    """A file-system-safe folder name for a country ("South Korea" -> "South_Korea").

    Never ``.``/``..`` (data is not trusted; see :mod:`yapo._paths`).
    """
    from yapo._paths import safe_component

    return safe_component(country, fallback="country")


def select_items(
    items: Sequence[CulturalMCQ],
    countries: Sequence[str] | None = None,
    languages: Sequence[str] | None = None,
) -> dict[str, list[CulturalMCQ]]:
    """Group items by country (in the order asked for), keeping only ``languages``.

    Raises a :class:`YapoError` naming what the data does have when a requested country
    or language is missing, rather than silently comparing on nothing.
    """
    kept = filter_countries(items, countries)
    wanted = list(dict.fromkeys(countries)) if countries else sorted({i.country for i in kept})
    groups: dict[str, list[CulturalMCQ]] = {}
    for country in wanted:
        chosen = [i for i in kept if i.country == country]
        if languages:
            have = sorted({i.language for i in chosen})
            chosen = [i for i in chosen if i.language in languages]
            if not chosen:
                raise YapoError(
                    f"{country} has no items in {', '.join(languages)}; "
                    f"its languages: {', '.join(have)}"
                )
        groups[country] = chosen
    return groups


def run_comparison(
    items: Sequence[CulturalMCQ],
    out: str | Path,
    settings: CompareConfig | None = None,
    *,
    countries: Sequence[str] | None = None,
    languages: Sequence[str] | None = None,
    log: Log = print,
    extra_settings: dict[str, Any] | None = None,
) -> ComparisonResult:
    """Per country: train ``settings.methods`` and evaluate them against no steering."""
    from yapo._paths import distinct_components
    from yapo.evaluate.mcq import McqConfig

    settings = settings or CompareConfig()
    settings.validate()
    groups = select_items(items, countries, languages)
    # one folder per country, never outside OUT nor OUT/eval or OUT/report themselves
    country_dirs = distinct_components(
        groups, "country", reserved=("eval", "report"), fallback="country"
    )
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    clock = _Clock()
    splits = {country: _split(country, chosen, settings) for country, chosen in groups.items()}
    clock.mark()
    model, tokenizer, sae, layer = _load(settings)
    clock.lap("load")
    study = _Study(
        settings, model, tokenizer, sae, layer, McqConfig(shared_lower=settings.shared_lower), log
    )
    outcomes = {
        country: _compare_country(study, country, split, folder / country_dirs[country], clock)
        for country, split in splits.items()
    }
    return _finish(study, outcomes, folder, clock, extra_settings)


Split = tuple[list[CulturalMCQ], list[CulturalMCQ], list[CulturalMCQ]]


class _Clock:
    """Wall time of each stage (``comparison.json``'s timings) and of the whole run."""

    def __init__(self) -> None:
        self.started = self.last = time.perf_counter()
        self.timings: dict[str, float] = {}

    def mark(self) -> None:
        self.last = time.perf_counter()

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.timings[name] = round(now - self.last, 1)
        self.last = now

    def seconds(self) -> float:
        return round(time.perf_counter() - self.started, 1)


@dataclass
class _Study:
    """What every country of one comparison shares: settings, model, SAE, layer, log."""

    settings: CompareConfig
    model: Any
    tokenizer: Any
    sae: Any
    layer: int
    mcq_config: Any
    log: Log


@dataclass
class _Outcome:
    """One country's sizes, evaluation results, chosen λ and folders for the report."""

    sizes: dict[str, int]
    results: list[Any]
    folders: list[Path]
    selection: dict[str, Any] | None


def _split(country: str, chosen: list[CulturalMCQ], settings: CompareConfig) -> Split:
    """Training, validation and test items of one country, split by question."""
    from yapo.data.split import split_by_question

    question_ids = sorted({item.question_id for item in chosen})
    if len(question_ids) < 2:
        raise YapoError(f"{country} has {len(question_ids)} question(s); need at least 2")
    if settings.max_questions is not None:
        keep = set(question_ids[: settings.max_questions])
        chosen = [item for item in chosen if item.question_id in keep]
    seed = settings.training.seed
    train_items, test_items = split_by_question(chosen, settings.test_fraction, seed)
    fit_items, validation_items = train_items, list[CulturalMCQ]()
    if settings.validation_fraction > 0:
        fit_items, validation_items = split_by_question(
            train_items, settings.validation_fraction, seed
        )
    if settings.multiplier == "auto" and not validation_items:
        raise YapoError(
            f"{country}: too few training questions to hold any out for choosing λ; "
            "use more questions or a fixed --multiplier"
        )
    return fit_items, validation_items, test_items


def _load(settings: CompareConfig) -> tuple[Any, Any, Any, int]:
    """The model, the SAE (when a method or the layer needs it) and the steering layer."""
    from yapo.models.loading import load_model
    from yapo.sae.formats import load_sae

    model, tokenizer = load_model(settings.model)
    sparse = any(method_spec(m).needs_sae for m in settings.methods)
    sae = load_sae(settings.sae, model=model) if sparse or settings.layer is None else None
    layer = settings.layer
    if layer is None:
        hook_layer = sae.metadata.get("hook_layer") if sae is not None else None
        if hook_layer is None:
            raise YapoError(
                f"SAE {settings.sae!r} does not record its layer (hook_layer); pass --layer"
            )
        layer = int(hook_layer)
    return model, tokenizer, sae, layer


def _compare_country(
    study: _Study, country: str, split: Split, country_dir: Path, clock: _Clock
) -> _Outcome:
    """Pairs, vectors, λ and the evaluation of one country (its folder holds them all)."""
    from yapo.data.files import write_jsonl
    from yapo.evaluate.benchmark import BASELINE, Condition, run_benchmark, write_benchmark

    settings, log = study.settings, study.log
    train_items, validation_items, test_items = split
    pairs, validation_pairs = _country_pairs(study, country, split)
    # The split itself, so that sweeps and inspections can use exactly these questions.
    write_jsonl(country_dir / "train_pairs.jsonl", pairs)
    write_jsonl(country_dir / "validation_pairs.jsonl", validation_pairs)
    write_jsonl(country_dir / "validation_items.jsonl", validation_items)
    write_jsonl(country_dir / "test_items.jsonl", test_items)
    vectors = []
    for method in settings.methods:
        run_dir = country_dir / "runs" / method
        vector = _vector(study, country, method, pairs, validation_pairs, run_dir)
        vectors.append((method, vector, str(run_dir)))
        clock.lap(f"{country}/train_{method}")
    folders = [Path(source) for _, _, source in vectors]
    multipliers: dict[str, Any] = {method: settings.multiplier for method, _, _ in vectors}
    selection = None
    if settings.multiplier == "auto":
        multipliers, selection, chosen_at = _choose_multipliers(
            study, country, validation_items, vectors, country_dir
        )
        folders.append(chosen_at)
        clock.lap(f"{country}/select")
    log(f"compare: {country}: evaluating no steering and every vector ...")
    conditions = [Condition(BASELINE)] + [
        Condition(method, vector, float(multipliers[method]), 1, source)
        for method, vector, source in vectors
    ]
    benchmark = run_benchmark(
        study.model,
        study.tokenizer,
        conditions,
        mcq_items=test_items,
        mcq_config=study.mcq_config,
        settings={"country": country, "layer": study.layer},
        log=log,
    )
    write_benchmark(benchmark, country_dir / "eval")
    clock.lap(f"{country}/evaluate")
    sizes = {
        "train_items": len(train_items),
        "train_pairs": len(pairs),
        "validation_items": len(validation_items),
        "validation_pairs": len(validation_pairs),
        "test_items": len(test_items),
    }
    return _Outcome(sizes, list(benchmark.results), folders, selection)


def _country_pairs(
    study: _Study, country: str, split: Split
) -> tuple[list[PreferencePair], list[PreferencePair]]:
    """Training and validation preference pairs of one country, under the pair policy."""
    settings = study.settings
    train_items, validation_items, test_items = split
    policy = settings.pair_policy
    pairs = _pairs(train_items, policy, study.model, study.tokenizer, study.mcq_config)
    validation_pairs = _pairs(
        validation_items, policy, study.model, study.tokenizer, study.mcq_config
    )
    if not pairs:
        raise YapoError(
            f"{country}: no training item has a usable rejected option under pair policy "
            f"{policy!r}, so there are no preference pairs"
            + (" (the data needs western_index)" if policy == "western" else "")
        )
    study.log(
        f"compare: {country}: {len(train_items)} training items -> {len(pairs)} "
        f"preference pairs ({policy}), {len(validation_items)} validation "
        f"items, {len(test_items)} held-out items"
    )
    return pairs, validation_pairs


def _vector(
    study: _Study,
    country: str,
    method: str,
    pairs: list[PreferencePair],
    validation_pairs: list[PreferencePair],
    run_dir: Path,
) -> Any:
    """The method's vector for this country: reused, resumed or trained (:mod:`yapo.methods.reuse`)."""
    settings, log = study.settings, study.log
    key = _training_key(method, pairs, validation_pairs, study.layer, study.sae, settings)
    action = "train" if settings.retrain else _reuse_action(run_dir, key, method_spec(method))
    if action == "reuse":
        log(f"compare: {country}: {method} already trained in {run_dir}")
        return _load_vector(run_dir)
    resume = action == "resume"
    verb = "resuming" if resume else "training"
    log(f"compare: {country}: {verb} {method} at layer {study.layer} ...")
    run_dir.mkdir(parents=True, exist_ok=True)
    write_json(run_dir / _KEY_FILE, {**key, "finished": False})
    vector = _train(
        method,
        pairs,
        validation_pairs,
        study.model,
        study.tokenizer,
        study.layer,
        study.sae,
        run_dir,
        settings,
        resume,
    )
    write_json(run_dir / _KEY_FILE, {**key, "finished": True})
    return vector


def _choose_multipliers(
    study: _Study,
    country: str,
    validation_items: list[CulturalMCQ],
    vectors: list[tuple[str, Any, str]],
    country_dir: Path,
) -> tuple[dict[str, Any], dict[str, Any], Path]:
    """Each vector's λ chosen on the validation items; the sweep is written for the report."""
    from yapo.evaluate.selection import select_multipliers
    from yapo.evaluate.sweep import write_sweep

    study.log(f"compare: {country}: choosing λ on {len(validation_items)} validation items ...")
    selection = select_multipliers(
        study.model,
        study.tokenizer,
        validation_items,
        vectors,
        study.settings.selection,
        mcq_config=study.mcq_config,
        log=study.log,
    )
    written = write_sweep(selection, country_dir / "selection")
    assert selection.selection is not None
    multipliers = {name: chosen["multiplier"] for name, chosen in selection.selection.items()}
    return multipliers, selection.selection, written


def _finish(
    study: _Study,
    outcomes: dict[str, _Outcome],
    folder: Path,
    clock: _Clock,
    extra_settings: dict[str, Any] | None,
) -> ComparisonResult:
    """Merge the countries into one table, build the report, write ``comparison.json``."""
    from yapo.evaluate.benchmark import BenchmarkResult, write_benchmark
    from yapo.gather import build_report

    settings = study.settings
    sizes = {country: outcome.sizes for country, outcome in outcomes.items()}
    result_settings = {
        "comparison": _settings_json(settings),
        "layer": study.layer,
        "countries": sizes,
        "chosen_multipliers": {
            country: outcome.selection
            for country, outcome in outcomes.items()
            if outcome.selection is not None
        },
        **(extra_settings or {}),
    }
    model_name = str(getattr(study.model, "name_or_path", "") or settings.model)
    combined = _merge([r for outcome in outcomes.values() for r in outcome.results])
    eval_folder = write_benchmark(
        BenchmarkResult(model_name, combined, result_settings), folder / "eval"
    )
    run_folders = [f for outcome in outcomes.values() for f in outcome.folders]
    report = build_report([*run_folders, eval_folder], folder / "report")
    clock.lap("report")
    seconds = clock.seconds()
    table = (eval_folder / "tables.md").read_text(encoding="utf-8")
    write_json(
        folder / "comparison.json",
        {**result_settings, "seconds": seconds, "timings": clock.timings},
    )
    return ComparisonResult(folder, report, seconds, table, study.layer, clock.timings, sizes)


def _merge(results: list[Any]) -> list[Any]:
    """Each condition's predictions over all countries as one result (countries as rows)."""
    from yapo.evaluate.benchmark import ConditionResult, MetricConfig
    from yapo.evaluate.mcq import McqRun

    merged: dict[str, list[Any]] = {}
    for result in results:
        merged.setdefault(result.condition.name, []).append(result)
    metrics = MetricConfig()
    combined = []
    for parts in merged.values():
        runs = [part.mcq for part in parts if part.mcq is not None]
        run = McqRun([prediction for one in runs for prediction in one.predictions])
        for one in runs:
            run.throughput.add(one.throughput)
        source = ", ".join(p.condition.source or "" for p in parts) or None
        condition = replace(parts[0].condition, source=source)
        combined.append(ConditionResult(condition, run, metrics.summarize(run.pairs())))
    return combined


_KEY_FILE = "comparison_key.json"


def _pairs(
    items: Sequence[CulturalMCQ], policy: str, model: Any, tokenizer: Any, mcq_config: Any
) -> list[PreferencePair]:
    """Preference pairs of ``items`` under ``policy`` (``"model"`` asks the model)."""
    from yapo.data.cultural import mcq_to_preferences

    if not items:
        return []
    choices = None
    if policy == "model":
        from yapo.evaluate.preferred import model_preferred_wrong

        choices = model_preferred_wrong(model, tokenizer, items, mcq_config)
    return mcq_to_preferences(items, policy=policy, model_choices=choices)  # type: ignore[arg-type]


def _digest(pairs: Sequence[PreferencePair]) -> str:
    digest = hashlib.sha256()
    for pair in pairs:
        digest.update(json.dumps([pair.prompt, pair.chosen, pair.rejected]).encode())
    return digest.hexdigest()


def _training_record(training: PreferenceConfig) -> dict[str, Any]:
    """What a run's key records of its training settings: seed, epochs and every change.

    Seed and epochs always, any other setting only where it differs from the trainer's
    default: the same record the comparison wrote when it passed just the settings it
    had changed, so a folder trained before reads as unchanged and is reused.
    """
    defaults = PreferenceConfig().to_json()
    changed = {
        name: value
        for name, value in training.to_json().items()
        if name not in ("seed", "epochs") and value != defaults[name]
    }
    return {"seed": training.seed, "epochs": training.epochs, **changed}


def _training_key(
    method: str,
    pairs: Sequence[PreferencePair],
    validation_pairs: Sequence[PreferencePair],
    layer: int,
    sae: Any,
    settings: CompareConfig,
) -> dict[str, Any]:
    """What a trained vector depends on: reuse it only when all of this is unchanged."""
    spec = method_spec(method)  # the objective is in the method's name
    key: dict[str, Any] = {"method": method, "layer": layer, "pairs": _digest(pairs)}
    if spec.optimized:
        key.update(
            validation_pairs=_digest(validation_pairs),
            training=_training_record(settings.training),
        )
    if spec.needs_sae and sae is not None:
        key["sae_checksum"] = sae.checksum()
    key["model"] = settings.model
    return key


def _reuse_action(run_dir: Path, key: dict[str, Any], spec: MethodSpec) -> Action:
    """What :func:`yapo.methods.reuse.decide` says of the run recorded in ``run_dir``."""
    key_file = run_dir / _KEY_FILE
    saved: dict[str, Any] | None = None
    finished = False
    if key_file.is_file():
        saved = json.loads(key_file.read_text(encoding="utf-8"))
        finished = bool(saved.pop("finished", True))
        finished = finished and (run_dir / "vector" / "config.json").is_file()
    return decide(saved, key, finished=finished, resumable=spec.optimized, on_change="train")


def _load_vector(run_dir: Path) -> Any:
    from yapo.vectors.io import load_vector

    return load_vector(run_dir / "vector")


def _train(
    method: str,
    pairs: Any,
    validation_pairs: Any,
    model: Any,
    tokenizer: Any,
    layer: int,
    sae: Any,
    run_dir: Path,
    settings: CompareConfig,
    resume: bool = False,
) -> Any:
    from yapo.methods.api import train

    spec = method_spec(method)
    extra: dict[str, Any] = {}
    if spec.optimized:
        extra["config"] = settings.training
        if validation_pairs:
            extra["eval_data"] = list(validation_pairs)
    result = train(
        method,
        data=pairs,
        model=model,
        tokenizer=tokenizer,
        layer=layer,
        sae=sae if spec.needs_sae else None,
        out=run_dir,
        overwrite=True,
        resume=resume,
        progress=False,
        **extra,
    )
    return result.vector


def _settings_json(settings: CompareConfig) -> dict[str, Any]:
    data = asdict(settings)
    data["methods"] = list(settings.methods)
    data["training"] = settings.training.to_json()
    data["selection"] = settings.selection.to_json()
    return data
