"""``benchmarks/selection_fallback.py``: the fallback rule reads validation only, and a
method that falls back in a country scores exactly like no steering there.

A finished run folder is written by hand (two countries, one method) so every number
has a straightforward oracle.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from tests.script_support import load_script


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    return load_script("selection_fallback")


def _point(multiplier: float, mixed: float, admissible: bool = True) -> dict[str, Any]:
    cell = {"value": mixed, "low": mixed, "high": mixed}
    rows = [{"level": "overall", "metrics": {"mixed": cell}}]
    return {"multiplier": multiplier, "admissible": admissible, "metrics": {"rows": rows}}


def _write_run(root: Path, correct: dict[str, dict[str, list[bool]]]) -> None:
    # validation: Spain's chosen λ ties the unsteered model (falls back), Mexico's beats it
    sweeps = {"Spain": (0.5, 0.5, True), "Mexico": (0.25, 0.5, True)}
    for country, (unsteered, chosen, admissible) in sweeps.items():
        folder = root / country / "selection"
        folder.mkdir(parents=True)
        points = [_point(0.0, unsteered), _point(1.0, chosen, admissible), _point(2.0, 0.0)]
        sweep = {
            "methods": {"bipo": {"points": points}},
            "selection": {"bipo": {"multiplier": 1.0, "admissible": admissible}},
        }
        (folder / "sweep.json").write_text(json.dumps(sweep))
    (root / "eval").mkdir()
    with (root / "eval" / "mcq_predictions.jsonl").open("w") as handle:
        for condition, countries in correct.items():
            for country, flags in countries.items():
                for index, flag in enumerate(flags):
                    for setting in ("localized", "nonlocalized"):
                        row = {
                            "condition": condition,
                            "id": f"{country}:{index}",
                            "question_id": f"q{index}",
                            "country": country,
                            "language": "en",
                            "setting": setting,
                            "answer": 0,
                            "prediction": 0 if flag else 1,
                            "correct": flag,
                            "parsed": True,
                        }
                        handle.write(json.dumps(row) + "\n")


def test_fallback_replaces_only_the_countries_validation_rejects(
    bench: ModuleType, tmp_path: Path
) -> None:
    correct = {
        "no steering": {"Spain": [True, False, False, False], "Mexico": [False, False, True, True]},
        "bipo": {"Spain": [False, False, False, False], "Mexico": [True, True, True, True]},
    }
    _write_run(tmp_path, correct)
    decisions = bench.fallback_decisions(tmp_path)
    assert decisions[("Spain", "bipo")]["falls_back"] is True  # 0.5 is not above 0.5
    assert decisions[("Mexico", "bipo")]["falls_back"] is False
    (result,) = bench.analyse(tmp_path)["methods"].values()
    assert result["falls_back_in"] == ["Spain"]
    # as run: Spain 0 − 0.25, Mexico 1 − 0.5 → mean over countries +0.125
    assert result["delta_as_run"]["value"] == pytest.approx(0.125)
    # with fallback Spain equals no steering: (0 + 0.5) / 2
    assert result["delta_with_fallback"]["value"] == pytest.approx(0.25)
    assert "Spain (λ 1: 50.0 vs 50.0)" in bench.to_markdown([bench.analyse(tmp_path)])


def test_a_choice_that_failed_the_fluency_limits_always_falls_back(
    bench: ModuleType, tmp_path: Path
) -> None:
    correct = {
        "no steering": {"Spain": [True, False], "Mexico": [True, False]},
        "bipo": {"Spain": [True, True], "Mexico": [True, True]},
    }
    _write_run(tmp_path, correct)
    sweep_file = tmp_path / "Mexico" / "selection" / "sweep.json"
    sweep = json.loads(sweep_file.read_text())
    sweep["selection"]["bipo"]["admissible"] = False  # better on validation, but not fluent
    sweep_file.write_text(json.dumps(sweep))
    assert bench.fallback_decisions(tmp_path)[("Mexico", "bipo")]["falls_back"] is True
    (result,) = bench.analyse(tmp_path)["methods"].values()
    assert result["delta_with_fallback"]["value"] == pytest.approx(0.0)
    assert result["delta_with_fallback"]["low"] == pytest.approx(0.0)
