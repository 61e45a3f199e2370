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
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from yapo._io import write_json
from yapo.data.records import CulturalMCQ, PreferencePair
from yapo.errors import YapoError
from yapo.evaluate.selection import SelectionConfig

DEFAULT_METHODS = ("yapo", "bipo", "caa", "sas")
# "<method>-reps": the same trainer and vector kind with RePS's objective (method_objective)
METHODS = (*DEFAULT_METHODS, "yapo-reps", "bipo-reps")
Log = Callable[[str], None]


def method_objective(method: str) -> tuple[str, str]:
    """The trainer method and objective of a compared method: ``"yapo-reps"`` ->
    ``("yapo", "reps")``, ``"bipo"`` -> ``("bipo", "bipo")``."""
    base, _, objective = method.partition("-")
    return base, objective or "bipo"


@dataclass
class CompareSettings:
    """What is trained, how, and how strength is chosen.

    Training settings left at ``None`` take the trainer's defaults
    (:class:`yapo.methods.preference.PreferenceConfig`: a step size relative to the
    measured scale of the stream, so one default fits every model). Each country's
    training questions are split again by question: ``validation_fraction`` of them are
    held out for early stopping (the run keeps its best-validation vector) and for
    choosing λ (``multiplier="auto"``, :mod:`yapo.evaluate.selection`); the test
    questions are scored once, at the chosen λ. ``pair_policy`` decides the rejected
    answer of each pair (``"model"``: the model's own preferred wrong option).
    """

    methods: tuple[str, ...] = DEFAULT_METHODS
    test_fraction: float = 0.5
    validation_fraction: float = 0.3
    pair_policy: str = "model"
    epochs: int = 6
    warmup_steps: int | None = None  # None: the trainer's default (a fraction of the run)
    learning_rate: float | None = None  # None: the trainer's (relative) default
    batch_size: int | None = None  # None: the trainer's default
    early_stopping_patience: int | None = 2  # the best-validation vector is kept anyway
    multiplier: float | str = "auto"  # a number, or "auto": chosen on validation
    selection: SelectionConfig = field(default_factory=SelectionConfig)
    max_questions: int | None = None  # per country; None: all
    shared_lower: bool = True  # False: score every condition with a full forward (oracle)
    model: str = "default"
    sae: str = "default"
    layer: int | None = None  # None: the SAE's own layer (its hook_layer)
    seed: int = 0
    retrain: bool = False

    def check(self) -> None:
        unknown = sorted(set(self.methods) - set(METHODS))
        if unknown:
            raise YapoError(f"unknown method(s) {unknown}; choose from {', '.join(METHODS)}")
        if not self.methods:
            raise YapoError("no methods to compare; give at least one of yapo,bipo,caa,sas")
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
            self.selection.check()
        elif isinstance(self.multiplier, str) or not math.isfinite(self.multiplier):
            raise YapoError(
                f"multiplier must be a finite number or 'auto', got {self.multiplier!r}"
            )
        from yapo.data.cultural import POLICIES

        if self.pair_policy not in POLICIES:
            raise YapoError(
                f"pair_policy must be one of {', '.join(POLICIES)}, got {self.pair_policy!r}"
            )
        if self.epochs < 1:
            raise YapoError(f"epochs must be at least 1, got {self.epochs}")
        if self.max_questions is not None and self.max_questions < 2:
            raise YapoError("max_questions must be at least 2 (one to train, one to test)")


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
    present = sorted({item.country for item in items})
    wanted = list(countries) if countries else present
    missing = [c for c in wanted if c not in present]
    if missing:
        raise YapoError(
            f"the data has no {', '.join(missing)}; its countries: {', '.join(present)}"
        )
    groups: dict[str, list[CulturalMCQ]] = {}
    for country in wanted:
        chosen = [i for i in items if i.country == country]
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
    settings: CompareSettings | None = None,
    *,
    countries: Sequence[str] | None = None,
    languages: Sequence[str] | None = None,
    log: Log = print,
    extra_settings: dict[str, Any] | None = None,
) -> ComparisonResult:
    """Per country: train ``settings.methods`` and evaluate them against no steering."""
    from yapo.data.files import write_jsonl
    from yapo.data.split import split_by_question
    from yapo.evaluate.benchmark import (
        BASELINE,
        BenchmarkResult,
        Condition,
        ConditionResult,
        MetricOptions,
        run_benchmark,
        write_benchmark,
    )
    from yapo.evaluate.mcq import McqConfig, McqRun
    from yapo.evaluate.selection import select_multipliers
    from yapo.evaluate.sweep import write_sweep
    from yapo.gather import build_report
    from yapo.models.loading import load_model
    from yapo.sae.formats import load_sae

    settings = settings or CompareSettings()
    settings.check()
    groups = select_items(items, countries, languages)
    from yapo._paths import distinct_components

    # one folder per country, never outside OUT nor OUT/eval or OUT/report themselves
    country_dirs = distinct_components(
        groups, "country", reserved=("eval", "report"), fallback="country"
    )
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    timings: dict[str, float] = {}

    def lap(name: str, since: float) -> float:
        now = time.perf_counter()
        timings[name] = round(now - since, 1)
        return now

    splits: dict[str, tuple[list[CulturalMCQ], list[CulturalMCQ], list[CulturalMCQ]]] = {}
    for country, chosen in groups.items():
        question_ids = sorted({item.question_id for item in chosen})
        if len(question_ids) < 2:
            raise YapoError(f"{country} has {len(question_ids)} question(s); need at least 2")
        if settings.max_questions is not None:
            keep = set(question_ids[: settings.max_questions])
            chosen = [item for item in chosen if item.question_id in keep]
        train_items, test_items = split_by_question(chosen, settings.test_fraction, settings.seed)
        fit_items, validation_items = train_items, list[CulturalMCQ]()
        if settings.validation_fraction > 0:
            fit_items, validation_items = split_by_question(
                train_items, settings.validation_fraction, settings.seed
            )
        if settings.multiplier == "auto" and not validation_items:
            raise YapoError(
                f"{country}: too few training questions to hold any out for choosing λ; "
                "use more questions or a fixed --multiplier"
            )
        splits[country] = (fit_items, validation_items, test_items)

    t = time.perf_counter()
    model, tokenizer = load_model(settings.model)
    # The SAE is needed by YaPO and SAS, and by everyone when the layer is its layer.
    bases = {method_objective(m)[0] for m in settings.methods}
    needs_sae = bool({"yapo", "sas"} & bases) or settings.layer is None
    sae = load_sae(settings.sae, model=model) if needs_sae else None
    layer = settings.layer
    if layer is None:
        hook_layer = sae.metadata.get("hook_layer") if sae is not None else None
        if hook_layer is None:
            raise YapoError(
                f"SAE {settings.sae!r} does not record its layer (hook_layer); pass --layer"
            )
        layer = int(hook_layer)
    t = lap("load", t)

    merged: dict[str, list[ConditionResult]] = {}
    run_folders: list[Path] = []
    sizes: dict[str, dict[str, int]] = {}
    chosen_multipliers: dict[str, dict[str, Any]] = {}
    mcq_config = McqConfig(shared_lower=settings.shared_lower)
    for country, (train_items, validation_items, test_items) in splits.items():
        pairs = _pairs(train_items, settings.pair_policy, model, tokenizer, mcq_config)
        validation_pairs = _pairs(
            validation_items, settings.pair_policy, model, tokenizer, mcq_config
        )
        sizes[country] = {
            "train_items": len(train_items),
            "train_pairs": len(pairs),
            "validation_items": len(validation_items),
            "validation_pairs": len(validation_pairs),
            "test_items": len(test_items),
        }
        if not pairs:
            raise YapoError(
                f"{country}: no training item has a usable rejected option under pair policy "
                f"{settings.pair_policy!r}, so there are no preference pairs"
                + (" (the data needs western_index)" if settings.pair_policy == "western" else "")
            )
        log(
            f"compare: {country}: {len(train_items)} training items -> {len(pairs)} "
            f"preference pairs ({settings.pair_policy}), {len(validation_items)} validation "
            f"items, {len(test_items)} held-out items"
        )
        country_dir = folder / country_dirs[country]
        # The split itself, so that sweeps and inspections can use exactly these questions.
        write_jsonl(country_dir / "train_pairs.jsonl", pairs)
        write_jsonl(country_dir / "validation_pairs.jsonl", validation_pairs)
        write_jsonl(country_dir / "validation_items.jsonl", validation_items)
        write_jsonl(country_dir / "test_items.jsonl", test_items)
        vectors = []
        for method in settings.methods:
            run_dir = country_dir / "runs" / method
            key = _training_key(method, pairs, validation_pairs, layer, sae, settings)
            state = "new" if settings.retrain else _run_state(run_dir, key)
            if state == "finished":
                log(f"compare: {country}: {method} already trained in {run_dir}")
                vector = _load_vector(run_dir)
            else:
                trained = method_objective(method)[0] in ("yapo", "bipo")
                resume = state == "interrupted" and trained
                verb = "resuming" if resume else "training"
                log(f"compare: {country}: {verb} {method} at layer {layer} ...")
                run_dir.mkdir(parents=True, exist_ok=True)
                write_json(run_dir / _KEY_FILE, {**key, "finished": False})
                vector = _train(
                    method,
                    pairs,
                    validation_pairs,
                    model,
                    tokenizer,
                    layer,
                    sae,
                    run_dir,
                    settings,
                    resume,
                )
                write_json(run_dir / _KEY_FILE, {**key, "finished": True})
            vectors.append((method, vector, str(run_dir)))
            run_folders.append(run_dir)
            t = lap(f"{country}/train_{method}", t)
        multipliers = {method: settings.multiplier for method, _, _ in vectors}
        if settings.multiplier == "auto":
            log(f"compare: {country}: choosing λ on {len(validation_items)} validation items ...")
            selection = select_multipliers(
                model,
                tokenizer,
                validation_items,
                vectors,
                settings.selection,
                mcq_config=mcq_config,
                log=log,
            )
            run_folders.append(write_sweep(selection, country_dir / "selection"))
            assert selection.selection is not None
            multipliers = {
                name: chosen["multiplier"] for name, chosen in selection.selection.items()
            }
            chosen_multipliers[country] = selection.selection
            t = lap(f"{country}/select", t)
        log(f"compare: {country}: evaluating no steering and every vector ...")
        conditions = [Condition(BASELINE)] + [
            Condition(method, vector, float(multipliers[method]), 1, source)
            for method, vector, source in vectors
        ]
        benchmark = run_benchmark(
            model,
            tokenizer,
            conditions,
            mcq_items=test_items,
            mcq_config=mcq_config,
            settings={"country": country, "layer": layer},
            log=log,
        )
        write_benchmark(benchmark, country_dir / "eval")
        for result in benchmark.results:
            merged.setdefault(result.condition.name, []).append(result)
        t = lap(f"{country}/evaluate", t)

    metrics = MetricOptions()
    combined: list[ConditionResult] = []
    for parts in merged.values():
        runs = [part.mcq for part in parts if part.mcq is not None]
        run = McqRun([prediction for one in runs for prediction in one.predictions])
        for one in runs:
            run.throughput.add(one.throughput)
        condition = parts[0].condition
        condition.source = ", ".join(p.condition.source or "" for p in parts) or None
        combined.append(ConditionResult(condition, run, metrics.summarize(run.pairs())))
    result_settings = {
        "comparison": _settings_json(settings),
        "layer": layer,
        "countries": sizes,
        "chosen_multipliers": chosen_multipliers,
        **(extra_settings or {}),
    }
    model_name = str(getattr(model, "name_or_path", "") or settings.model)
    eval_folder = write_benchmark(
        BenchmarkResult(model_name, combined, result_settings), folder / "eval"
    )
    report = build_report([*run_folders, eval_folder], folder / "report")
    lap("report", t)
    seconds = round(time.perf_counter() - started, 1)
    table = (eval_folder / "tables.md").read_text(encoding="utf-8")
    write_json(
        folder / "comparison.json",
        {**result_settings, "seconds": seconds, "timings": timings},
    )
    return ComparisonResult(folder, report, seconds, table, layer, timings, sizes)


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


def _preference_settings(settings: CompareSettings) -> dict[str, Any]:
    """The training settings compare passes to YaPO/BiPO (unset ones: trainer defaults)."""
    chosen = {
        "epochs": settings.epochs,
        "warmup_steps": settings.warmup_steps,
        "learning_rate": settings.learning_rate,
        "batch_size": settings.batch_size,
        "early_stopping_patience": settings.early_stopping_patience,
    }
    return {"seed": settings.seed, **{k: v for k, v in chosen.items() if v is not None}}


def _training_key(
    method: str,
    pairs: Sequence[PreferencePair],
    validation_pairs: Sequence[PreferencePair],
    layer: int,
    sae: Any,
    settings: CompareSettings,
) -> dict[str, Any]:
    """What a trained vector depends on: reuse it only when all of this is unchanged."""
    key: dict[str, Any] = {"method": method, "layer": layer, "pairs": _digest(pairs)}
    base, _ = method_objective(method)  # the objective is in the method's name
    if base in ("yapo", "bipo"):
        key.update(
            validation_pairs=_digest(validation_pairs),
            training=_preference_settings(settings),
        )
    if base in ("yapo", "sas") and sae is not None:
        key["sae_checksum"] = sae.checksum()
    key["model"] = settings.model
    return key


def _run_state(run_dir: Path, key: dict[str, Any]) -> str:
    """``finished`` (reuse it), ``interrupted`` (same settings, resume from its newest
    checkpoint) or ``new`` (no run, or one made with other settings: train afresh)."""
    key_file = run_dir / _KEY_FILE
    if not key_file.is_file():
        return "new"
    saved = json.loads(key_file.read_text(encoding="utf-8"))
    finished = bool(saved.pop("finished", True))
    if saved != key:
        return "new"
    if finished and (run_dir / "vector" / "config.json").is_file():
        return "finished"
    return "interrupted"


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
    settings: CompareSettings,
    resume: bool = False,
) -> Any:
    from yapo.methods.api import train

    extra: dict[str, Any] = {}
    base, objective = method_objective(method)
    if base in ("yapo", "bipo"):
        extra = _preference_settings(settings)
        if objective != "bipo":
            extra["objective"] = objective
        if validation_pairs:
            extra["eval_data"] = list(validation_pairs)
    result = train(
        base,
        data=pairs,
        model=model,
        tokenizer=tokenizer,
        layer=layer,
        sae=sae if base in ("yapo", "sas") else None,
        out=run_dir,
        overwrite=True,
        resume=resume,
        progress=False,
        **extra,
    )
    return result.vector


def _settings_json(settings: CompareSettings) -> dict[str, Any]:
    data = asdict(settings)
    data["methods"] = list(settings.methods)
    data["selection"] = settings.selection.to_json()
    return data


def parse_methods(text: str) -> tuple[str, ...]:
    """``"yapo,bipo"`` -> ``("yapo", "bipo")``, refusing unknown names."""
    methods = tuple(m.strip().lower() for m in text.split(",") if m.strip())
    unknown = sorted(set(methods) - set(METHODS))
    if unknown or not methods:
        raise YapoError(f"unknown method(s) {unknown or [text]}; choose from {', '.join(METHODS)}")
    return methods
