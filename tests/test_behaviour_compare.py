"""The pure logic of ``benchmarks/behaviour_compare.py``: the row split, the validation
A/B items, the choice of λ, the paired bootstrap and the refusal of non-finite numbers.

The script is not a package module, so it is imported from its file.
"""

from __future__ import annotations

import argparse
import math
from types import ModuleType

import numpy as np
import pytest
from tests.script_support import load_script

from yapo.data import PreferencePair


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    return load_script("behaviour_compare")


def test_split_is_deterministic_disjoint_and_sized(bench: ModuleType) -> None:
    train, validation = bench.split_rows(100, 30, 20, seed=3)
    assert (train, validation) == bench.split_rows(100, 30, 20, seed=3)
    assert len(train) == 30 and len(validation) == 20
    assert not set(train) & set(validation)
    assert set(train) | set(validation) <= set(range(100))
    assert train == sorted(train) and validation == sorted(validation)
    assert bench.split_rows(100, 30, 20, seed=4) != (train, validation)
    # for one seed, training sets of growing size are nested
    bigger_train, _ = bench.split_rows(100, 40, 20, seed=3)
    assert set(train) <= set(bigger_train)


def test_split_refuses_more_rows_than_there_are(bench: ModuleType) -> None:
    with pytest.raises(SystemExit, match="10 usable rows"):
        bench.split_rows(10, 8, 3, seed=0)


def test_validation_items_place_the_matching_answer_by_a_seeded_coin(bench: ModuleType) -> None:
    from yapo.evaluate.behaviour import ab_prompt

    pairs = [
        PreferencePair(prompt=f"question {i}?", chosen=f"yes {i}", rejected=f"no {i}", id=f"r-{i}")
        for i in range(64)
    ]
    items = bench.validation_items(pairs)
    assert [item.id for item in items] == [pair.id for pair in pairs]
    letters = []
    for item, pair in zip(items, pairs):
        assert item.matching_letter is None  # the package's coin decides, as for test files
        options, index = item.ab(seed=0)
        assert options[index] == pair.chosen and options[1 - index] == pair.rejected
        text, same = ab_prompt(item, seed=0)
        assert same == index and f"({'AB'[index]}) {pair.chosen}" in text
        assert item.ab(seed=0) == bench.validation_items([pair])[0].ab(seed=0)
        letters.append(index)
    assert 16 <= sum(letters) <= 48  # both letters, roughly balanced


def test_lambda_choice_takes_the_best_and_breaks_ties_toward_the_smaller(
    bench: ModuleType,
) -> None:
    curve = [
        {"multiplier": 0.5, "matching_probability": 0.6, "accuracy": 0.5},
        {"multiplier": 2.0, "matching_probability": 0.7, "accuracy": 0.5},
        {"multiplier": 1.0, "matching_probability": 0.7, "accuracy": 0.4},
        {"multiplier": 4.0, "matching_probability": 0.65, "accuracy": 0.9},
    ]
    assert bench.choose_multiplier(curve) == 1.0


def test_paired_interval_against_direct_oracles(bench: ModuleType) -> None:
    rng = np.random.default_rng(0)
    base = rng.uniform(size=50).tolist()
    same = bench.paired_interval(base, base, seed=0, samples=500)
    assert same == {"value": 0.0, "low": 0.0, "high": 0.0}
    shifted = bench.paired_interval(base, [b + 0.25 for b in base], seed=0, samples=500)
    assert shifted["value"] == pytest.approx(0.25)
    assert shifted["low"] == pytest.approx(0.25) and shifted["high"] == pytest.approx(0.25)
    other = rng.uniform(size=50).tolist()
    result = bench.paired_interval(base, other, seed=1, samples=2000)
    assert result["value"] == pytest.approx(float(np.mean(np.subtract(other, base))))
    assert result["low"] < result["value"] < result["high"]
    assert result == bench.paired_interval(base, other, seed=1, samples=2000)


def test_non_finite_numbers_are_an_error(bench: ModuleType) -> None:
    bench.check_finite({"a": [1.0, {"b": 2}], "c": None, "d": "text"})
    for bad in (math.nan, math.inf, -math.inf):
        with pytest.raises(SystemExit, match=r"results\.methods\.bipo\[1\]"):
            bench.check_finite({"methods": {"bipo": [0.5, bad]}})


def test_options_refuse_unknown_methods_and_non_positive_lambdas(bench: ModuleType) -> None:
    assert bench._methods("caa, yapo-reps,caa") == ("caa", "yapo-reps")
    assert bench._grid("4,1,0.5,1") == (0.5, 1.0, 4.0)
    for text in ("dpo", ""):
        with pytest.raises(argparse.ArgumentTypeError):
            bench._methods(text)
    for text in ("0,1", "-1", "nan", "x"):
        with pytest.raises(argparse.ArgumentTypeError):
            bench._grid(text)


def test_rows_ratios_objectives_and_table(bench: ModuleType) -> None:
    from yapo.evaluate.behaviour import AbPoint

    def point(multiplier: float, per_item: list[float]) -> AbPoint:
        accuracy = sum(p > 0.5 for p in per_item) / len(per_item)
        return AbPoint(multiplier, accuracy, sum(per_item) / len(per_item), per_item)

    baseline = point(0.0, [0.4, 0.6, 0.5, 0.3])
    tests = {
        "bipo": point(2.0, [0.5, 0.7, 0.6, 0.4]),
        "bipo-reps": point(4.0, [0.6, 0.8, 0.7, 0.5]),
        "caa": point(1.0, [0.4, 0.6, 0.5, 0.3]),
    }
    rows = {
        name: {
            "train_seconds": seconds,
            "chosen_multiplier": tests[name].multiplier,
            "validation_curve": [bench.point_json(tests[name])],
            "test": bench.point_json(tests[name]),
        }
        for name, seconds in (("bipo", 10.0), ("bipo-reps", 25.0), ("caa", 1.0))
    }
    objectives = bench.paired_rows(baseline, tests, rows, seed=0)
    assert [rows[n]["train_seconds_vs_bipo"] for n in rows] == [1.0, 2.5, 0.1]
    assert rows["bipo"]["paired_vs_none"]["matching_probability"]["value"] == pytest.approx(0.1)
    # correct (P > 1/2): none 1 of 4, bipo 2 of 4
    assert rows["bipo"]["paired_vs_none"]["accuracy"]["value"] == pytest.approx(0.25)
    assert rows["caa"]["paired_vs_none"]["accuracy"] == {"value": 0.0, "low": 0.0, "high": 0.0}
    assert list(objectives) == ["dense: bipo-reps − bipo"]
    assert objectives["dense: bipo-reps − bipo"]["value"] == pytest.approx(0.1)
    results = {
        "settings": {"model": "m", "layer": 3, "seed": 0, "grid": [1.0, 2.0], "epochs": 2},
        "data": {"train_pairs": 8, "validation_items": 4, "test_items": 4},
        "none": {
            "validation": bench.point_json(baseline),
            "test": bench.point_json(baseline),
        },
        "methods": rows,
        "objectives": objectives,
    }
    table = bench.markdown(results)
    body = [line for line in table.splitlines() if line.startswith("| ") and "---" not in line]
    assert [line.split(" | ")[0] for line in body] == [
        "| Condition",
        "| no steering",
        "| bipo",
        "| bipo-reps",
        "| caa",
    ]
    assert "| bipo-reps | 25.0 | 2.50 | 4 |" in table
