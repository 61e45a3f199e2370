"""λ chosen on validation (never the test questions), fluency limits, and pair policy ``model``."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from tests.conftest import make_sae, make_tokenizer
from tests.methods_support import steerable_model

from yapo.compare import CompareConfig, comparison_training, run_comparison
from yapo.data.cultural import mcq_to_preferences
from yapo.data.demo import load_demo_mcq
from yapo.data.prompts import format_prompt
from yapo.data.records import WESTERN, CulturalMCQ
from yapo.errors import YapoError
from yapo.evaluate.fluency import Fluency, repetition_rate
from yapo.evaluate.mcq import mcq_text
from yapo.evaluate.preferred import model_preferred_wrong
from yapo.evaluate.scoring import encode_pair
from yapo.evaluate.selection import SelectionConfig, _admissible, choice_order, choose, scan


def _items(n: int = 6, seed: int = 0) -> list[CulturalMCQ]:
    rng = random.Random(seed)

    def words(k: int) -> str:
        return " ".join(f"w{rng.randrange(4, 100)}" for _ in range(k))

    items = []
    for i in range(n):
        items.append(
            CulturalMCQ(
                id=f"q{i}:en",
                question_id=f"q{i}",
                language="en",
                country="Egypt",
                localized=words(5),
                nonlocalized=words(4),
                options=[words(rng.randrange(1, 3)) for _ in range(4)],
                answer=rng.randrange(4),
                option_countries=["Egypt", "Morocco", WESTERN, "Spain"],
            )
        )
    return items


def _option_logprob(model: torch.nn.Module, tokenizer: object, prompt: str, option: str) -> float:
    ids, n_choice = encode_pair(tokenizer, prompt, option)
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0].float()
    logprobs = torch.log_softmax(logits[:-1], dim=-1)
    targets = torch.tensor(ids[1:])
    picked = logprobs[torch.arange(len(targets)), targets]
    return float(picked[-n_choice:].sum())


def test_policy_model_rejects_the_models_own_preferred_wrong_option() -> None:
    model, tokenizer = steerable_model("llama"), make_tokenizer()
    items = _items()
    choices = model_preferred_wrong(model, tokenizer, items)
    for item in items:
        for setting in ("localized", "nonlocalized"):
            prompt = format_prompt(tokenizer, mcq_text(item, setting, "loglik"), "auto")
            scores = [_option_logprob(model, tokenizer, prompt, o) for o in item.options]
            wrong = [i for i in range(4) if i != item.answer]
            assert choices[(item.id, setting)] == max(wrong, key=scores.__getitem__)
    pairs = mcq_to_preferences(items, policy="model", model_choices=choices)
    assert len(pairs) == 2 * len(items)
    by_id = {item.id: item for item in items}
    for pair in pairs:
        item = by_id[pair.metadata["mcq_id"]]
        assert pair.chosen == item.options[item.answer]
        assert pair.rejected == item.options[choices[(item.id, pair.setting or "")]]
    with pytest.raises(YapoError, match="model_choices"):
        mcq_to_preferences(items, policy="model")


def test_repetition_rate_counts_repeated_ngrams() -> None:
    assert repetition_rate([1, 2, 3, 4, 5, 6]) == 0.0
    assert repetition_rate([1, 2, 3, 4, 1, 2, 3, 4]) == pytest.approx(1 / 5)
    assert repetition_rate([7] * 10) == pytest.approx(6 / 7)
    assert repetition_rate([1, 2]) == 0.0


def _point(multiplier: float, value: float, admissible: bool = True) -> dict[str, object]:
    return {
        "multiplier": multiplier,
        "overall": {"mixed": {"value": value}},
        "admissible": admissible,
    }


def test_choice_is_the_best_admissible_lambda_and_the_gentlest_on_ties() -> None:
    points = [_point(0.0, 0.9), _point(1.0, 0.5), _point(2.0, 0.7), _point(4.0, 0.7)]
    assert choose(points, "mixed")["multiplier"] == 2.0  # λ = 0 is never chosen
    points.append(_point(8.0, 0.95, admissible=False))  # best, but not fluent
    assert choose(points, "mixed")["multiplier"] == 2.0
    none_ok = [_point(1.0, 0.5, False), _point(-0.5, 0.4, False)]
    assert choose(none_ok, "mixed") == {"multiplier": -0.5, "admissible": False}


def test_fluency_limits_rule_out_a_lambda() -> None:
    config = SelectionConfig(max_nll_increase=1.0, max_repetition=0.5)
    reference = Fluency(nll=3.0, repetition=0.0, empty=0, samples=[])
    assert _admissible(Fluency(3.9, 0.1, 0, []), reference, config) == (True, None)
    assert _admissible(Fluency(4.5, 0.1, 0, []), reference, config)[0] is False
    assert _admissible(Fluency(3.0, 0.8, 0, []), reference, config)[0] is False
    assert _admissible(Fluency(float("inf"), 1.0, 4, []), reference, config)[0] is False


def test_bad_selection_settings_are_refused() -> None:
    for bad in (
        SelectionConfig(multipliers=()),
        SelectionConfig(multipliers=(1.0, float("nan"))),
        SelectionConfig(metric="pnlg"),
    ):
        with pytest.raises(YapoError):
            bad.validate()
    with pytest.raises(YapoError, match="validation"):
        CompareConfig(validation_fraction=0.0).validate()


def _small_comparison(
    saved_model_dir: Path, tmp_path: Path, *, allow_unsteered: bool = False
) -> tuple[list[CulturalMCQ], CompareConfig]:
    """The demo's Egypt MCQs and a CAA + BiPO comparison small enough for a test."""
    sae_dir = tmp_path / "sae"
    make_sae("jumprelu").save(sae_dir)
    items, _ = load_demo_mcq(countries=["Egypt"], languages=["en"])
    selection = SelectionConfig(
        multipliers=(1.0, 8.0), fluency_prompts=1, fluency_tokens=4, allow_unsteered=allow_unsteered
    )
    settings = CompareConfig(
        methods=("caa", "bipo"),
        model=str(saved_model_dir),
        sae=str(sae_dir),
        layer=1,
        max_questions=10,
        training=comparison_training(epochs=1),
        validation_fraction=0.4,
        selection=selection,
    )
    return items, settings


def test_lambda_chosen_by_compare_cannot_see_the_test_questions(
    saved_model_dir: Path, tmp_path: Path
) -> None:
    items, settings = _small_comparison(saved_model_dir, tmp_path)
    first = tmp_path / "first"
    run_comparison(items, first, settings, log=lambda _: None)
    test_ids = {
        json.loads(line)["id"]
        for line in (first / "Egypt" / "test_items.jsonl").read_text().splitlines()
    }
    validation_ids = {
        json.loads(line)["id"]
        for line in (first / "Egypt" / "validation_items.jsonl").read_text().splitlines()
    }
    assert test_ids and validation_ids and not test_ids & validation_ids
    # the test questions change (another correct answer); nothing else does
    changed = [
        replace(i, answer=(i.answer + 1) % len(i.options)) if i.id in test_ids else i for i in items
    ]
    second = tmp_path / "second"
    run_comparison(changed, second, settings, log=lambda _: None)
    one = json.loads((first / "Egypt" / "selection" / "sweep.json").read_text())
    two = json.loads((second / "Egypt" / "selection" / "sweep.json").read_text())
    assert one["selection"] == two["selection"]
    for name in ("caa", "bipo"):
        for mine, theirs in zip(one["methods"][name]["points"], two["methods"][name]["points"]):
            mine.pop("throughput"), theirs.pop("throughput")  # seconds differ, nothing else
            assert mine == theirs
    summary = json.loads((first / "comparison.json").read_text())
    assert set(summary["chosen_multipliers"]["Egypt"]) == {"caa", "bipo"}
    evaluated = json.loads((first / "eval" / "results.json").read_text())
    used = {c["condition"]["name"]: c["condition"]["multiplier"] for c in evaluated["conditions"]}
    for name in ("caa", "bipo"):
        assert used[name] == summary["chosen_multipliers"]["Egypt"][name]["multiplier"]


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["compare", "--data", "demo", "--validation-fraction", "0"], "validation"),
        (["compare", "--data", "demo", "--select-grid", ","], "at least one multiplier"),
        (["eval", "--data", "demo", "--multiplier", "auto"], "--validation-data"),
        (["eval", "--data", "demo", "--multiplier", "nan"], "finite"),
    ],
)
def test_cli_refuses_bad_strength_settings(
    arguments: list[str], message: str, tmp_path: Path
) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "yapo.cli.main", *arguments, "--out", str(tmp_path / "x")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 2, done.stderr
    assert message in done.stderr


def test_paired_difference_is_the_mean_item_difference_with_a_joint_resample() -> None:
    from yapo.evaluate.metrics import PairScore
    from yapo.evaluate.paired import paired_difference

    rng = random.Random(3)
    base, other = [], []
    for i in range(40):
        country = "A" if i < 25 else "B"
        b = (float(rng.random() < 0.4), float(rng.random() < 0.4))
        o = (float(rng.random() < 0.6), float(rng.random() < 0.6))
        base.append(PairScore(f"i{i}", country, "en", *b))
        other.append(PairScore(f"i{i}", country, "en", *o))
    got = paired_difference(base, other, "mixed", samples=500)

    def mixed(scores: list[PairScore], country: str) -> float:
        rows = [(p.localized + p.nonlocalized) / 2 for p in scores if p.country == country]
        return sum(rows) / len(rows)

    expected = sum(mixed(other, c) - mixed(base, c) for c in "AB") / 2
    assert got.value == pytest.approx(expected)
    assert got.low <= got.value <= got.high and got.high - got.low > 0
    same = paired_difference(base, base, "rca", samples=200)
    assert same.value == same.low == same.high == 0.0  # a condition against itself


def test_sweep_choose_writes_fluency_and_the_chosen_lambda(
    saved_model_dir: Path, tmp_path: Path
) -> None:
    from transformers import AutoModelForCausalLM

    from yapo.vectors import DenseVector

    model = AutoModelForCausalLM.from_pretrained(saved_model_dir)
    torch.manual_seed(0)
    DenseVector.create(torch.randn(32), model, 1, method="bipo").save(tmp_path / "v")
    out = tmp_path / "sweep"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "yapo.cli.main",
            "sweep",
            "--model",
            str(saved_model_dir),
            "--data",
            "demo",
            "--countries",
            "Egypt",
            "--limit",
            "4",
            "--vector",
            f"v={tmp_path / 'v'}",
            "--multipliers",
            "1,4",
            "--choose",
            "--fluency-prompts",
            "1",
            "--fluency-every-point",
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    sweep = json.loads((out / "sweep.json").read_text())
    assert sweep["selection"]["v"]["multiplier"] in (1.0, 4.0)
    points = sweep["methods"]["v"]["points"]
    assert [p["multiplier"] for p in points] == [0.0, 1.0, 4.0]
    assert all("fluency" in p for p in points)
    assert "chosen" in (out / "sweep.md").read_text()


def test_the_first_admissible_point_of_the_choice_order_is_the_choice() -> None:
    """The lazy scan's stopping rule, against :func:`choose` on fully measured curves."""
    rng = random.Random(0)
    grid = [-2.0, -1.0, 0.5, 1.0, 2.0, 4.0]
    for _ in range(500):
        points = [_point(0.0, rng.choice([0.2, 0.5]))]
        for m in rng.sample(grid, rng.randrange(1, len(grid) + 1)):
            points.append(_point(m, rng.choice([0.1, 0.3, 0.5]), rng.random() < 0.5))
        chosen = choose(points, "mixed")
        order = choice_order(points, "mixed")
        assert sorted(order) == [i for i, p in enumerate(points) if p["multiplier"] != 0.0]
        first = next((points[i] for i in order if points[i]["admissible"]), None)
        if first is None:
            assert chosen["admissible"] is False
        else:
            assert chosen["multiplier"] == first["multiplier"]


@pytest.mark.parametrize("every_point", [False, True])
def test_lazy_fluency_makes_the_same_choice_with_fewer_generations(
    monkeypatch: pytest.MonkeyPatch, every_point: bool
) -> None:
    """Fluency is faked (λ 0.5, 1 and 16 fail the NLL limit); the sweep is real."""
    from yapo.evaluate import selection as selection_module
    from yapo.vectors import DenseVector

    model, tokenizer = steerable_model(), make_tokenizer()
    torch.manual_seed(0)
    vector = DenseVector.create(torch.randn(32) * 4, model, 1, method="bipo")
    calls: list[float] = []
    failing = {0.5, 1.0, 16.0}

    def fake_fluency(*_args: object, steer: object = None, **_kw: object) -> Fluency:
        multiplier = 0.0 if steer is None else float(steer.multiplier)  # type: ignore[attr-defined]
        calls.append(multiplier)
        return Fluency(nll=2.0 + 3.0 * (multiplier in failing), repetition=0.0, empty=0, samples=[])

    monkeypatch.setattr(selection_module, "measure_fluency", fake_fluency)
    grid = (0.5, 1.0, 2.0, 4.0, 8.0, 16.0)
    config = SelectionConfig(multipliers=grid, fluency_prompts=1, fluency_every_point=every_point)
    sweep = selection_module.select_multipliers(
        model, tokenizer, _items(8), [("v", vector, None)], config
    )
    rows = [p.to_json() for p in sweep.methods["v"]]
    admissible = {m: m not in failing for m in grid}
    full = [{**r, "admissible": admissible.get(r["multiplier"], True)} for r in rows]
    assert sweep.selection["v"]["multiplier"] == choose(full, "mixed")["multiplier"]
    steered = [m for m in calls if m != 0.0]
    assert sweep.selection["v"]["fluency_measured"] == len(steered)
    if every_point:
        assert sorted(steered) == list(grid)
    else:  # stops at the first admissible point of the choice order
        order = [rows[i]["multiplier"] for i in choice_order(rows, "mixed")]
        stop = next(i for i, m in enumerate(order) if admissible[m])
        assert steered == order[: stop + 1] and stop > 0  # some points were skipped
        assert len(steered) < len(grid)
        measured = [r for r in rows if "fluency" in r]
        assert len(measured) == stop + 2  # and the unsteered reference


def test_allow_unsteered_chooses_no_steering_unless_a_fluent_lambda_beats_it() -> None:
    points = [_point(0.0, 0.5), _point(1.0, 0.5), _point(2.0, 0.7, admissible=False)]
    assert choose(points, "mixed")["multiplier"] == 1.0  # today: the best fluent λ
    chosen = choose(points, "mixed", allow_unsteered=True)
    assert chosen == {"multiplier": 0.0, "admissible": True, "value": 0.5, "unsteered": True}
    points.append(_point(4.0, 0.6))
    assert choose(points, "mixed", allow_unsteered=True)["multiplier"] == 4.0
    none_fluent = [_point(0.0, 0.1), _point(1.0, 0.9, admissible=False)]
    assert choose(none_fluent, "mixed", allow_unsteered=True)["multiplier"] == 0.0


@pytest.mark.parametrize("allow_unsteered", [False, True])
def test_the_lazy_scan_settles_the_same_choice_as_measuring_everything(
    allow_unsteered: bool,
) -> None:
    """500 random curves: choose() on the scanned points == choose() on every point."""
    rng = random.Random(1)
    grid = [-2.0, 0.5, 1.0, 2.0, 4.0, 8.0]
    skipped = 0
    for _ in range(500):
        values = [rng.choice([0.1, 0.3, 0.5]) for _ in range(len(grid) + 1)]
        fluent = [True] + [rng.random() < 0.5 for _ in grid]
        points = [_point(m, v, f) for m, v, f in zip([0.0, *grid], values, fluent, strict=True)]
        unmeasured = [{k: v for k, v in p.items() if k != "admissible"} for p in points]
        for every_point in (False, True):
            config = SelectionConfig(
                fluency_every_point=every_point, allow_unsteered=allow_unsteered
            )
            measured = scan(unmeasured, config, fluent.__getitem__)
            assert measured[0] == 0 and len(set(measured)) == len(measured)
            if every_point:
                assert sorted(measured) == list(range(len(points)))
            skipped += len(points) - len(measured)
            lazy = choose(
                [points[i] for i in sorted(measured)], "mixed", allow_unsteered=allow_unsteered
            )
            full = choose(points, "mixed", allow_unsteered=allow_unsteered)
            assert lazy == full
    assert skipped > 0


def test_compare_with_allow_unsteered_scores_a_declined_vector_as_no_steering(
    saved_model_dir: Path, tmp_path: Path
) -> None:
    items, settings = _small_comparison(saved_model_dir, tmp_path, allow_unsteered=True)
    run_comparison(items, tmp_path / "run", settings, log=lambda _: None)
    sweep = json.loads((tmp_path / "run" / "Egypt" / "selection" / "sweep.json").read_text())
    evaluated = json.loads((tmp_path / "run" / "eval" / "results.json").read_text())
    used = {c["condition"]["name"]: c["condition"]["multiplier"] for c in evaluated["conditions"]}
    predictions = [
        json.loads(line)
        for line in (tmp_path / "run" / "eval" / "mcq_predictions.jsonl").read_text().splitlines()
    ]
    by_condition: dict[str, list[object]] = {}
    for row in predictions:
        by_condition.setdefault(row["condition"], []).append(
            (row["id"], row["setting"], row["prediction"])
        )
    for name in ("caa", "bipo"):
        points = sweep["methods"][name]["points"]
        rows = [{**p, "admissible": p.get("admissible", True)} for p in points if "fluency" in p]
        oracle = choose(rows, "mixed", allow_unsteered=True)
        assert sweep["selection"][name]["multiplier"] == oracle["multiplier"] == used[name]
        if oracle["multiplier"] == 0.0:
            assert by_condition[name] == by_condition["no steering"]
