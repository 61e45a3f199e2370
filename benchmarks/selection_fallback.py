"""Would "don't steer unless validation says it helps" have helped? Measured on finished runs.

``--multiplier auto`` picks, for each vector, the best fluent λ of its grid on validation
questions, even when that λ scores below the unsteered model on the same questions. A
stricter rule falls back to λ = 0 (no steering) when no admissible λ beats the unsteered
model on validation. The rule uses validation numbers only, and its test result needs no
new forward: at λ = 0 a method's test predictions *are* the no-steering predictions. So
this script reads finished ``yapo compare`` / ``yapo demo`` folders (their per-country
``selection/sweep.json`` and ``eval/mcq_predictions.jsonl``) and reports, per method, the
test mixed accuracy as run and under the fallback rule, each with the paired bootstrap
interval against no steering (:func:`yapo.evaluate.paired.paired_difference`, the tables'
interval: items resampled within each country, overall = mean over countries).

    python benchmarks/selection_fallback.py RUN_FOLDER... --out benchmarks/results/selection-fallback
"""

from __future__ import annotations

import argparse
import json
import math
from dataclasses import fields
from pathlib import Path
from typing import Any

from yapo.evaluate.mcq import McqPrediction, predictions_to_pairs
from yapo.evaluate.metrics import PairScore
from yapo.evaluate.paired import paired_difference

BASELINE = "no steering"


def _overall(point: dict[str, Any], metric: str) -> float:
    (overall,) = [r["metrics"] for r in point["metrics"]["rows"] if r["level"] == "overall"]
    value = overall[metric]["value"]
    return math.nan if value is None else float(value)


def fallback_decisions(root: Path, metric: str = "mixed") -> dict[tuple[str, str], dict[str, Any]]:
    """Per (country, method): the chosen λ, its validation value, the unsteered one, the rule."""
    decisions = {}
    for sweep_file in sorted(root.glob("*/selection/sweep.json")):
        country = sweep_file.parent.parent.name
        sweep = json.loads(sweep_file.read_text())
        for method, entry in sweep["methods"].items():
            points = {float(p["multiplier"]): p for p in entry["points"]}
            chosen = sweep["selection"][method]
            unsteered = _overall(points[0.0], metric)
            value = _overall(points[float(chosen["multiplier"])], metric)
            decisions[(country, method)] = {
                "multiplier": chosen["multiplier"],
                "admissible": bool(chosen["admissible"]),
                "validation": value,
                "validation_unsteered": unsteered,
                "falls_back": (not chosen["admissible"]) or not value > unsteered,
            }
    return decisions


def _predictions(root: Path) -> dict[str, list[McqPrediction]]:
    names = {f.name for f in fields(McqPrediction)}
    by_condition: dict[str, list[McqPrediction]] = {}
    with (root / "eval" / "mcq_predictions.jsonl").open() as handle:
        for line in handle:
            row = json.loads(line)
            kept = {k: v for k, v in row.items() if k in names and k != "condition"}
            by_condition.setdefault(row["condition"], []).append(McqPrediction(**kept))
    return by_condition


def _interval(baseline: list[PairScore], other: list[PairScore]) -> dict[str, float]:
    diff = paired_difference(baseline, other, "mixed")
    return {"value": diff.value, "low": diff.low, "high": diff.high}


def analyse(root: Path) -> dict[str, Any]:
    decisions = fallback_decisions(root)
    predictions = _predictions(root)
    if BASELINE not in predictions:
        raise SystemExit(f"{root}: no '{BASELINE}' condition in eval/mcq_predictions.jsonl")
    baseline = predictions_to_pairs(predictions[BASELINE])
    by_id = {p.id: p for p in baseline}
    methods = {}
    for name, rows in predictions.items():
        if name == BASELINE:
            continue
        as_run = predictions_to_pairs(rows)
        back = {c for (c, m), d in decisions.items() if m == name and d["falls_back"]}
        with_fallback = [by_id[p.id] if p.country in back else p for p in as_run]
        methods[name] = {
            "falls_back_in": sorted(back),
            "decisions": {c: d for (c, m), d in decisions.items() if m == name},
            "delta_as_run": _interval(baseline, as_run),
            "delta_with_fallback": _interval(baseline, with_fallback),
        }
    return {"folder": str(root), "methods": methods}


def _pct(cell: dict[str, float]) -> str:
    return f"{100 * cell['value']:+.1f} [{100 * cell['low']:+.1f}, {100 * cell['high']:+.1f}]"


def to_markdown(results: list[dict[str, Any]]) -> str:
    lines = [
        "# λ selection: fall back to no steering when validation says no λ helps",
        "",
        "Test mixed accuracy minus no steering (points, paired bootstrap 95% interval);",
        "the fallback rule uses validation numbers only.",
        "",
        "| run | method | falls back in (chosen λ: validation vs unsteered) | Δ as run | Δ with fallback |",
        "|---|---|---|---|---|",
    ]
    for result in results:
        for name, method in result["methods"].items():
            why = ", ".join(
                f"{c} (λ {d['multiplier']:g}{'' if d['admissible'] else ', not fluent'}: "
                f"{100 * d['validation']:.1f} vs {100 * d['validation_unsteered']:.1f})"
                for c, d in sorted(method["decisions"].items())
                if d["falls_back"]
            )
            lines.append(
                f"| {result['folder']} | {name} | {why or '–'} | "
                f"{_pct(method['delta_as_run'])} | {_pct(method['delta_with_fallback'])} |"
            )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folders", nargs="+", type=Path, help="finished compare/demo folders")
    parser.add_argument("--out", type=Path, required=True, help="writes OUT.json and OUT.md")
    args = parser.parse_args()
    results = [analyse(folder) for folder in args.folders]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(results, indent=2) + "\n")
    markdown = to_markdown(results)
    args.out.with_suffix(".md").write_text(markdown)
    print(markdown)


if __name__ == "__main__":
    main()
