"""Power-seeking A/B: every method with its validation-chosen λ, against no steering.

Issue 12 asks for one table on BiPO's power-seeking task (Cao et al., NeurIPS 2024) that
puts the two objectives side by side — BiPO's bi-directional DPO loss and RePS's
reference-free one, each dense (``bipo``, ``bipo-reps``) and sparse in the SAE's latent
space (``yapo``, ``yapo-reps``) — next to the contrastive means (``caa``, ``sas``) and no
steering. So that no method is reported at an arbitrary point of its curve, or at one
tuned on the test set, the protocol is that of ``yapo compare``
(:mod:`yapo.evaluate.selection`):

1. ``train.csv`` (``question, matching, not_matching``) is read with the package's
   preference loader and split *by row* with a fixed seed into ``--train-pairs``
   training pairs and a disjoint set of ``--validation-items`` (train.csv has no
   repeated question, so rows are questions). The validation rows become A/B items the
   way the package scores any BiPO file without an A/B form: the matching answer is put
   at A or B by a seeded coin per item (:class:`yapo.evaluate.behaviour.BehaviourItem`),
   so a letter bias cannot pass for steering.
2. Every method is trained at the SAE's layer through :func:`yapo.train` with the
   trainer's defaults (relative step size, keep-best), except ``--epochs`` (the same for
   all preference methods) and, as ``yapo compare`` does, early stopping with patience
   ``--patience`` on the validation rows as preference pairs. Each training is timed in
   this one process (cache fill, step-size measurement, steps and evaluations included).
3. λ is chosen per vector on the validation items from ``--grid`` (direction +1, toward
   the behaviour). The metric is the **mean probability of the matching answer**
   (renormalised over the letters A and B) — continuous, so it separates vectors that
   accuracy on a few dozen items ties; ties go to the smaller λ, the gentler edit. No
   fluency limit is applied: an A/B item is scored by the probability of one letter
   after the prompt, nothing is generated, so a λ that wrecks fluency shows up as a
   worse score rather than as text that looks good to a metric.
4. No steering and every vector at its chosen λ are scored once on ``test_infer.csv``;
   each method's difference from no steering gets a paired percentile bootstrap
   interval over the test items (the same resample for both conditions). Accuracy (the
   matching letter more probable) is reported beside the metric, with its own interval.
   Where both objectives of one vector kind ran, their paired difference is given too.

Writes ``OUT/results.json`` and ``OUT/results.md`` atomically; a NaN or infinite number
anywhere is an error, never a row. Paths are relative to the repository root.

Cost on CPU (embedded Gemma 3 270M, one thread; estimated from smoke runs on a shared
machine, wall time scaled by the CPU share they got): an optimizer step of 4 pairs
~3.5 s for BiPO/YaPO and ~8 s for RePS; caching and evaluation ~2 s per training or
validation pair for BiPO/YaPO and ~5 s for RePS; scoring ~0.5 s per item and condition.
The settings below take about half an hour with two threads on an idle machine::

    python benchmarks/behaviour_compare.py --train-pairs 64 --validation-items 32 \\
        --epochs 2 --threads 2 --out benchmarks/results/behaviour-power-seeking
"""

from __future__ import annotations

import argparse
import math
import platform
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

DATA = Path("../shared/data/bipo/power-seeking")
TASK = "power-seeking"
# compared name -> (trainer method, objective); None: no training loop (contrastive means)
METHODS: dict[str, tuple[str, str | None]] = {
    "caa": ("caa", None),
    "sas": ("sas", None),
    "bipo": ("bipo", "bipo"),
    "yapo": ("yapo", "bipo"),
    "bipo-reps": ("bipo", "reps"),
    "yapo-reps": ("yapo", "reps"),
}
SPARSE = ("yapo", "sas")  # trainer methods that live in the SAE's latent space
OBJECTIVE_PAIRS = (("dense", "bipo", "bipo-reps"), ("sparse", "yapo", "yapo-reps"))
METRIC = "matching_probability"
SAMPLES = 10_000
CONFIDENCE = 0.95


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--train", type=Path, default=DATA / "train.csv", help="BiPO train.csv")
    parser.add_argument(
        "--test", type=Path, default=DATA / "test_infer.csv", help="BiPO test_infer.csv"
    )
    parser.add_argument(
        "--methods", type=_methods, default=tuple(METHODS), help=f"from {','.join(METHODS)}"
    )
    parser.add_argument(
        "--train-pairs", type=int, default=128, help="rows of train.csv to train on"
    )
    parser.add_argument(
        "--validation-items", type=int, default=64, help="other rows: λ choice, early stopping"
    )
    parser.add_argument("--test-limit", type=int, default=None, help="first N test items only")
    parser.add_argument("--epochs", type=int, default=4, help="for every preference method")
    parser.add_argument(
        "--patience", type=int, default=2, help="early stopping (as compare); 0: none"
    )
    parser.add_argument(
        "--grid",
        type=_grid,
        default=(0.5, 1.0, 2.0, 4.0, 8.0, 16.0),
        help="λ chosen on validation from these (positive; direction +1)",
    )
    parser.add_argument("--seed", type=int, default=0, help="row split, A/B coin, training")
    parser.add_argument("--model", default="default")
    parser.add_argument("--sae", default="default", help="its hook_layer is the layer steered")
    parser.add_argument("--batch-size", type=int, default=16, help="A/B scoring batch")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--out", type=Path, default=Path("benchmarks/results/behaviour-power-seeking")
    )
    args = parser.parse_args(argv)
    for name in ("train_pairs", "validation_items"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.epochs < 1 or args.patience < 0:
        parser.error("--epochs must be >= 1 and --patience >= 0")
    return args


def _methods(text: str) -> tuple[str, ...]:
    names = tuple(dict.fromkeys(m.strip().lower() for m in text.split(",") if m.strip()))
    unknown = sorted(set(names) - set(METHODS))
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"unknown method(s) {unknown or [text]}; choose from {', '.join(METHODS)}"
        )
    return names


def _grid(text: str) -> tuple[float, ...]:
    """Positive finite λ only: the direction is +1, and λ = 0 is the no-steering row."""
    try:
        values = tuple(float(x) for x in text.split(",") if x.strip())
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"--grid takes numbers like 0.5,1,2: {exc}") from exc
    if not values or not all(math.isfinite(v) and v > 0 for v in values):
        raise argparse.ArgumentTypeError(f"--grid needs positive finite numbers, got {text!r}")
    return tuple(sorted(set(values)))


# ------------------------------------------------------------------- data
def split_rows(n: int, train: int, validation: int, seed: int) -> tuple[list[int], list[int]]:
    """Disjoint row indices for training and validation, a function of the seed alone.

    One permutation of all rows is cut in two, so for one seed a larger ``--train-pairs``
    keeps every row of a smaller training set (runs of different sizes are nested).
    """
    if train + validation > n:
        raise SystemExit(
            f"train.csv has {n} usable rows: cannot take {train} training pairs and "
            f"{validation} validation items"
        )
    order = [int(i) for i in np.random.default_rng(seed).permutation(n)]
    return sorted(order[:train]), sorted(order[train : train + validation])


def validation_items(pairs: Sequence[Any]) -> list[Any]:
    """Preference pairs as A/B items with no letter, so the package's coin places them."""
    from yapo.data.bipo import BehaviourItem

    return [
        BehaviourItem(
            id=str(pair.id),
            task=TASK,
            question=pair.prompt,
            matching=pair.chosen,
            not_matching=pair.rejected,
            location=str(pair.metadata.get("source", "")),
        )
        for pair in pairs
    ]


def load_data(args: argparse.Namespace) -> dict[str, Any]:
    """Training pairs, validation pairs and items, test items, and what the loaders said."""
    from yapo.data import load_preferences
    from yapo.data.bipo import load_behaviour

    rows, train_report = load_preferences(args.train)
    test, test_report = load_behaviour(str(args.test))
    if args.test_limit is not None:
        test = test[: args.test_limit]
    fit, held = split_rows(len(rows), args.train_pairs, args.validation_items, args.seed)
    validation_pairs = [rows[i] for i in held]
    items = validation_items(validation_pairs)
    letters = Counter("AB"[item.ab(args.seed)[1]] for item in items)
    train_questions = {rows[i].prompt.strip().lower() for i in fit}
    return {
        "pairs": [rows[i] for i in fit],
        "validation_pairs": validation_pairs,
        "validation": items,
        "test": test,
        "summary": {
            "train_file": str(args.train),
            "test_file": str(args.test),
            "train_rows_usable": len(rows),
            "train_loader": train_report.summary().splitlines()[0],
            "test_loader": test_report.summary().splitlines()[0],
            "train_pairs": len(fit),
            "validation_items": len(items),
            "validation_matching_letter": dict(sorted(letters.items())),
            "test_items": len(test),
            "test_matching_letter": dict(sorted(Counter(i.matching_letter for i in test).items())),
            "test_questions_also_in_training_pairs": sum(
                i.question.strip().lower() in train_questions for i in test
            ),
        },
    }


# ---------------------------------------------------------------- scoring
def score(
    model: Any,
    tokenizer: Any,
    items: Sequence[Any],
    conditions: dict[str, tuple[Any, Sequence[float]]],
    args: argparse.Namespace,
) -> dict[str, list[Any]]:
    """Every condition ``name -> (vector or None, λs)`` on ``items`` with the package's A/B
    scorer, direction +1; an :class:`AbPoint` per λ.

    The one call site of the scorer: it shares the blocks below the layer across the λ of
    one vector; a scorer that took several vectors at once would share them across all.
    """
    from yapo.evaluate.behaviour import score_ab_points

    return {
        name: score_ab_points(
            model,
            tokenizer,
            items,
            vector=vector,
            multipliers=list(multipliers) if vector is not None else [0.0],
            direction=1,
            batch_size=args.batch_size,
            seed=args.seed,
        )
        for name, (vector, multipliers) in conditions.items()
    }


def point_json(point: Any) -> dict[str, float]:
    return {
        "multiplier": float(point.multiplier),
        METRIC: float(point.matching_probability),
        "accuracy": float(point.accuracy),
    }


def choose_multiplier(curve: Sequence[dict[str, float]]) -> float:
    """The λ of the best validation metric; ties go to the smaller λ (the gentler edit)."""
    if not curve:
        raise SystemExit("an empty validation curve: the λ grid has no point")
    best = max(curve, key=lambda p: (p[METRIC], -p["multiplier"]))
    return best["multiplier"]


def per_item_correct(point: Any) -> list[float]:
    """Per-item accuracy from the per-item probabilities (P > 1/2 ⇔ the higher log-prob),
    checked against the scorer's own accuracy so the two can never disagree silently."""
    correct = [float(p > 0.5) for p in point.per_item]
    if abs(sum(correct) / len(correct) - point.accuracy) > 1e-12:
        raise SystemExit("per-item accuracy disagrees with the scorer's accuracy")
    return correct


def paired_interval(
    baseline: Sequence[float], other: Sequence[float], seed: int, samples: int = SAMPLES
) -> dict[str, float]:
    """``mean(other − baseline)`` over items with a paired percentile bootstrap interval.

    Both conditions are scored on the same items, so resampling the per-item differences
    (not each condition on its own) is what answers "did it move the same items?".
    """
    from yapo.evaluate.bootstrap import percentile_interval, resample_indices

    if len(baseline) != len(other) or not baseline:
        raise SystemExit("paired difference needs the same non-empty items in both conditions")
    diffs = np.asarray(other, dtype=np.float64) - np.asarray(baseline, dtype=np.float64)
    picks = resample_indices(np.random.default_rng(seed), len(diffs), samples)
    interval = percentile_interval(float(diffs.mean()), diffs[picks].mean(axis=1), CONFIDENCE)
    return {"value": interval.value, "low": interval.low, "high": interval.high}


def check_finite(value: Any, where: str = "results") -> None:
    """Refuse NaN or infinity anywhere in the results: it is an error, never a table row."""
    if isinstance(value, dict):
        for key, item in value.items():
            check_finite(item, f"{where}.{key}")
    elif isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            check_finite(item, f"{where}[{index}]")
    elif isinstance(value, float) and not math.isfinite(value):
        raise SystemExit(f"non-finite number at {where}: {value}")


# --------------------------------------------------------------- training
def train_method(
    name: str, data: dict[str, Any], model: Any, tokenizer: Any, layer: int, sae: Any, args: Any
) -> tuple[Any, dict[str, Any]]:
    """Train one compared method in this process; the vector and its timing/steps."""
    import yapo

    base, objective = METHODS[name]
    settings: dict[str, Any] = {}
    if objective is not None:
        settings = {"epochs": args.epochs, "seed": args.seed, "objective": objective}
        settings["early_stopping_patience"] = args.patience or None
        settings["eval_data"] = list(data["validation_pairs"])
    started = time.perf_counter()
    result = yapo.train(
        base,
        data=list(data["pairs"]),
        model=model,
        tokenizer=tokenizer,
        layer=layer,
        sae=sae if base in SPARSE else None,
        progress=False,
        **settings,
    )
    seconds = time.perf_counter() - started
    evals = [r for r in result.records if r.get("kind") == "eval"]
    info: dict[str, Any] = {
        "trainer_method": base,
        "objective": objective,
        "train_seconds": round(seconds, 2),
        "steps": int(result.steps),
        "nonzero": int((result.vector.vector != 0).sum()),
        "vector_norm": float(result.vector.vector.norm()),
    }
    steps = [r for r in result.records if r.get("kind") == "train"]
    if steps:  # optimizer steps alone; the rest is caching, step-size measure, evaluation
        step_seconds = sum(float(r["seconds"]) for r in steps)
        info["step_seconds"] = round(step_seconds, 2)
        info["seconds_per_step"] = round(step_seconds / len(steps), 4)
        info["epochs_run"] = max(int(r["epoch"]) for r in steps)
    if evals:
        best = min(evals, key=lambda r: float(r["eval_loss"]))
        info["best_eval_loss"] = float(best["eval_loss"])
        info["best_eval_step"] = int(best["step"])
    return result.vector, info


def select_and_test(
    vectors: dict[str, Any], data: dict[str, Any], model: Any, tokenizer: Any, args: Any
) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
    """λ per vector on the validation items, then no steering and every vector at its λ
    on the test items, scored once; the rows (chosen λ, curves, test) and test points."""
    started = time.perf_counter()
    grid = {name: (vector, args.grid) for name, vector in vectors.items()}
    curves = score(model, tokenizer, data["validation"], {"none": (None, [0.0]), **grid}, args)
    rows: dict[str, dict[str, Any]] = {"none": {"validation": point_json(curves["none"][0])}}
    chosen: dict[str, tuple[Any, Sequence[float]]] = {"none": (None, [0.0])}
    for name, vector in vectors.items():
        curve = [point_json(p) for p in curves[name]]
        rows[name] = {"chosen_multiplier": choose_multiplier(curve), "validation_curve": curve}
        chosen[name] = (vector, [rows[name]["chosen_multiplier"]])
    validated = time.perf_counter()
    tests = {
        name: points[0]
        for name, points in score(model, tokenizer, data["test"], chosen, args).items()
    }
    for name, point in tests.items():
        rows[name]["test"] = point_json(point)
        print(
            f"[{name}] λ = {point.multiplier:g}: test P(matching) {point.matching_probability:.4f}",
            flush=True,
        )
    rows["none"]["score_seconds"] = {
        "validation": round(validated - started, 1),
        "test": round(time.perf_counter() - validated, 1),
    }
    return rows, tests


# ---------------------------------------------------------------- results
def paired_rows(
    baseline: Any, tests: dict[str, Any], rows: dict[str, dict[str, Any]], seed: int
) -> dict[str, dict[str, Any]]:
    """Each method against no steering, and each RePS vector against its BiPO-loss twin."""
    base_correct = per_item_correct(baseline)
    for name, point in tests.items():
        rows[name]["paired_vs_none"] = {
            METRIC: paired_interval(baseline.per_item, point.per_item, seed),
            "accuracy": paired_interval(base_correct, per_item_correct(point), seed),
        }
        rows[name]["test_per_item"] = [float(p) for p in point.per_item]
        bipo = rows.get("bipo", {}).get("train_seconds")
        rows[name]["train_seconds_vs_bipo"] = (
            round(rows[name]["train_seconds"] / bipo, 3) if bipo else None
        )
    objectives = {}
    for kind, plain, reps in OBJECTIVE_PAIRS:
        if plain in tests and reps in tests:
            objectives[f"{kind}: {reps} − {plain}"] = paired_interval(
                tests[plain].per_item, tests[reps].per_item, seed
            )
    return objectives


def environment() -> dict[str, Any]:
    import torch

    import yapo

    return {
        "yapo": yapo.__version__,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "threads": torch.get_num_threads(),
        "machine": platform.machine(),
    }


def _cell(interval: dict[str, float]) -> str:
    return f"{interval['value']:+.3f} [{interval['low']:+.3f}, {interval['high']:+.3f}]"


def markdown(results: dict[str, Any]) -> str:
    """One table: training time, chosen λ, validation and test metric, paired Δ."""
    data, settings = results["data"], results["settings"]
    lines = [
        f"## BiPO power-seeking A/B: every method at its validation-chosen λ ({settings['model']}, "
        f"layer {settings['layer']})",
        "",
        f"{data['train_pairs']} training pairs and {data['validation_items']} validation items "
        f"(disjoint rows of train.csv, seed {settings['seed']}); {data['test_items']} test items "
        f"(test_infer.csv). Metric: mean P(matching answer) over A/B "
        f"(selection and test); λ from {', '.join(f'{g:g}' for g in settings['grid'])}, ties → "
        f"smaller; {settings['epochs']} epochs for preference methods. Δ: paired bootstrap vs "
        f"no steering ({SAMPLES} resamples, {CONFIDENCE:.0%}).",
        "",
        "| Condition | train s | × BiPO | λ | val P(match) | test P(match) | Δ P(match) [CI] "
        "| test acc | Δ acc [CI] |",
        "| --- | ---: | ---: | ---: | ---: | ---: | --- | ---: | --- |",
    ]
    none = results["none"]
    lines.append(
        f"| no steering | – | – | 0 | {none['validation'][METRIC]:.3f} | "
        f"{none['test'][METRIC]:.3f} | – | {none['test']['accuracy']:.3f} | – |"
    )
    for name, row in results["methods"].items():
        chosen = next(
            p for p in row["validation_curve"] if p["multiplier"] == row["chosen_multiplier"]
        )
        ratio = row["train_seconds_vs_bipo"]
        paired = row["paired_vs_none"]
        lines.append(
            f"| {name} | {row['train_seconds']:.1f} | {'–' if ratio is None else f'{ratio:.2f}'} "
            f"| {row['chosen_multiplier']:g} | {chosen[METRIC]:.3f} | {row['test'][METRIC]:.3f} "
            f"| {_cell(paired[METRIC])} | {row['test']['accuracy']:.3f} "
            f"| {_cell(paired['accuracy'])} |"
        )
    if results["objectives"]:
        lines += ["", "RePS against the BiPO loss, same vector kind (paired Δ P(match), test):", ""]
        lines += [f"* {name}: {_cell(value)}" for name, value in results["objectives"].items()]
    lines += [
        "",
        "No fluency limit: A/B scoring reads one letter's probability and generates nothing.",
    ]
    return "\n".join(lines) + "\n"


def settings_json(args: argparse.Namespace, layer: int, sae: Any) -> dict[str, Any]:
    """Everything the numbers depend on, the trainer's defaults included."""
    from yapo.methods import PreferenceConfig

    training = PreferenceConfig(
        epochs=args.epochs, seed=args.seed, early_stopping_patience=args.patience or None
    ).to_json()
    training.pop("objective")  # per method: see each row's "objective"
    return {
        **{k: v for k, v in vars(args).items() if k not in ("train", "test", "out")},
        "methods": list(args.methods),
        "grid": list(args.grid),
        "layer": layer,
        "sae_reference": sae.reference,
        "sae_checksum": sae.checksum(),
        "metric": METRIC,
        "direction": 1,
        "bootstrap": {"samples": SAMPLES, "confidence": CONFIDENCE, "paired": True},
        "preference_training": training,
        "environment": environment(),
    }


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    import yapo
    from yapo._io import write_json, write_text

    started = time.perf_counter()
    data = load_data(args)
    print(f"data: {data['summary']}", flush=True)
    model, tokenizer = yapo.load_model(args.model)
    sae = yapo.load_sae(args.sae, model=model)
    if sae.metadata.get("hook_layer") is None:
        raise SystemExit(f"SAE {args.sae!r} does not record its layer (hook_layer)")
    layer = yapo.resolve_layer(model, int(sae.metadata["hook_layer"]))
    vectors, info = {}, {}
    for name in args.methods:
        print(f"[{name}] training ...", flush=True)
        vectors[name], info[name] = train_method(name, data, model, tokenizer, layer, sae, args)
        print(f"[{name}] {info[name]['train_seconds']:.1f} s, {info[name]['steps']} steps")
    rows, tests = select_and_test(vectors, data, model, tokenizer, args)
    none, baseline = rows.pop("none"), tests.pop("none")
    methods = {name: {**info[name], **rows[name]} for name in args.methods}
    objectives = paired_rows(baseline, tests, methods, args.seed)
    results = {
        "settings": settings_json(args, layer, sae),
        "data": data["summary"],
        "none": {**none, "test_per_item": [float(p) for p in baseline.per_item]},
        "methods": methods,
        "objectives": objectives,
        "test_item_ids": [item.id for item in data["test"]],
        "seconds": round(time.perf_counter() - started, 1),
    }
    check_finite(results)
    args.out.mkdir(parents=True, exist_ok=True)
    write_json(args.out / "results.json", results)
    write_text(args.out / "results.md", markdown(results))
    print(markdown(results), flush=True)
    print(f"wrote {args.out / 'results.json'} and results.md in {results['seconds']} s")


if __name__ == "__main__":
    main()
