"""Scoring many conditions from one pass of the lower blocks equals scoring each in full.

The oracle is the straightforward path (the whole model per condition, steered by
hooks: ``shared_lower=False``), itself checked against unpadded forwards in
``test_eval_scoring.py``.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest
import torch
from tests.conftest import HIDDEN, make_model, make_sae
from tests.test_eval_scoring import CHOICES, PROMPTS, _sliding_gemma3, oracle
from tests.test_eval_support import make_eval_tokenizer, make_items

from yapo import DenseVector, SparseVector, YapoError, decoder_blocks
from yapo.data.bipo import BehaviourItem
from yapo.data.mmlu import MmluQuestion
from yapo.evaluate.behaviour import score_ab, score_ab_points
from yapo.evaluate.benchmark import Condition, run_benchmark
from yapo.evaluate.conditions import score_conditions
from yapo.evaluate.mcq import McqConfig, run_mcq, run_mcq_conditions
from yapo.evaluate.mmlu import run_mmlu
from yapo.evaluate.sweep import run_sweep
from yapo.intervene import LayerSplit
from yapo.vectors.steer import Steer

ARCHS = ["llama", "gpt2", "gemma2", "gemma3", "gemma3-sliding"]


def _model(arch: str) -> torch.nn.Module:
    return _sliding_gemma3() if arch == "gemma3-sliding" else make_model(arch)


def _vectors(model: torch.nn.Module, layer: int, seed: int = 3) -> tuple[DenseVector, SparseVector]:
    g = torch.Generator().manual_seed(seed)
    dense = DenseVector.create(torch.randn(HIDDEN, generator=g), model, layer, method="bipo")
    sae = make_sae("jumprelu")
    sparse = SparseVector.create(
        torch.randn(sae.d_sae, generator=g), model, layer, sae, method="yapo"
    )
    return dense, sparse


def _conditions(model: torch.nn.Module) -> list[Steer]:
    """No steering, dense and sparse at several λ and both directions, two layers."""
    dense, sparse = _vectors(model, 1)
    top_dense, _ = _vectors(model, -1, seed=4)
    grid = [(1.0, 1), (2.5, -1), (0.5, 1)]
    conditions = [Steer()]
    conditions += [Steer(v, m, d) for v in (dense, sparse) for m, d in grid]
    conditions += [Steer(top_dense, 2.0, 1), Steer(top_dense, 0.0, 1)]
    return conditions


def _flat(scores: list[list[float]]) -> list[float]:
    return [x for row in scores for x in row]


def _argmax(scores: list[list[float]]) -> list[int]:
    return [max(range(len(row)), key=row.__getitem__) for row in scores]


@pytest.mark.parametrize("prefix_cache", [True, False], ids=["prefix-cache", "whole-rows"])
@pytest.mark.parametrize("arch", ARCHS)
def test_shared_lower_equals_the_full_forward_per_condition(
    arch: str, prefix_cache: bool, caplog: pytest.LogCaptureFixture
) -> None:
    model = _model(arch)
    tokenizer = make_eval_tokenizer()
    conditions = _conditions(model)
    options: dict[str, Any] = {"batch_size": 5, "prefix_cache": prefix_cache}
    with caplog.at_level(logging.WARNING, logger="yapo.evaluate.conditions"):
        # pass_rows=6: a handful of conditions per upper pass, so stacking is exercised
        shared = score_conditions(model, tokenizer, PROMPTS, CHOICES, conditions, **options)
        small = score_conditions(
            model, tokenizer, PROMPTS, CHOICES, conditions, pass_rows=6, **options
        )
    # the shared path ran; nothing fell back
    assert not [r for r in caplog.records if r.name == "yapo.evaluate.conditions"]
    full = score_conditions(
        model, tokenizer, PROMPTS, CHOICES, conditions, shared_lower=False, **options
    )
    assert len(shared) == len(full) == len(conditions)
    for fast, stacked, slow in zip(shared, small, full):
        assert _flat(fast.scores) == pytest.approx(_flat(slow.scores), abs=1e-4)
        assert _flat(stacked.scores) == pytest.approx(_flat(slow.scores), abs=1e-4)
        assert _argmax(fast.scores) == _argmax(slow.scores)
    # steering changed the scores, and λ = 0 is the unsteered model
    assert _flat(shared[1].scores) != pytest.approx(_flat(shared[0].scores), abs=1e-3)
    assert shared[-1].scores == shared[0].scores


def test_shared_scores_equal_a_manually_steered_unpadded_forward() -> None:
    model = make_model("llama")
    tokenizer = make_eval_tokenizer()
    dense, sparse = _vectors(model, 2)
    conditions = [Steer(dense, 1.5, -1), Steer(sparse, 2.0, 1), Steer()]
    shared = score_conditions(model, tokenizer, PROMPTS, CHOICES, conditions, batch_size=4)
    for condition, result in zip(conditions, shared):
        steer = (condition.vector, condition.multiplier, condition.direction)
        for prompt, options, row in zip(PROMPTS, CHOICES, result.scores):
            expected = [
                oracle(model, tokenizer, prompt, c, steer if condition.vector else None)
                for c in options
            ]
            assert row == pytest.approx(expected, abs=1e-4)


@pytest.mark.parametrize("side", ["left", "right"])
def test_tokenizer_padding_side_changes_nothing(side: str) -> None:
    model = make_model("gemma3")
    tokenizer = make_eval_tokenizer()
    reference = score_conditions(
        model, tokenizer, PROMPTS, CHOICES, _conditions(model), shared_lower=False
    )
    tokenizer.padding_side = side
    shared = score_conditions(model, tokenizer, PROMPTS, CHOICES, _conditions(model))
    for fast, slow in zip(shared, reference):
        assert _flat(fast.scores) == pytest.approx(_flat(slow.scores), abs=1e-4)


def test_normalize_and_multi_token_options() -> None:
    model = make_model("llama")
    tokenizer = make_eval_tokenizer()
    conditions = _conditions(model)[:4]
    mean = score_conditions(model, tokenizer, PROMPTS, CHOICES, conditions, normalize=True)
    total = score_conditions(model, tokenizer, PROMPTS, CHOICES, conditions)
    for m, t in zip(mean, total):
        for options, row_m, row_t in zip(CHOICES, m.scores, t.scores):
            lengths = [len(c.split()) for c in options]
            assert row_m == pytest.approx([x / n for x, n in zip(row_t, lengths)], abs=1e-6)


class _CallCounter:
    def __init__(self, module: torch.nn.Module) -> None:
        self.calls = 0
        self.handle = module.register_forward_hook(self._count)

    def _count(self, *_: Any) -> None:
        self.calls += 1


def test_lower_blocks_run_once_per_batch_whatever_the_number_of_conditions() -> None:
    model = make_model("llama")
    tokenizer = make_eval_tokenizer()
    dense, sparse = _vectors(model, 1)
    conditions = [Steer()] + [Steer(v, m) for v in (dense, sparse) for m in (0.5, 1.0, 2.0)]
    score_conditions(model, tokenizer, PROMPTS, CHOICES, conditions)  # the one-off check
    blocks = decoder_blocks(model)
    bottom, top = _CallCounter(blocks[0]), _CallCounter(blocks[-1])
    shared = score_conditions(model, tokenizer, PROMPTS, CHOICES, conditions, batch_size=16)
    # 12 rows: one batch of prompts; the prompt pass and the option-row pass.
    assert bottom.calls == 2
    # 7 conditions × 12 rows in passes of at most 64 rows: 5 + 2 conditions.
    assert top.calls == 2 * 2
    assert all(result.throughput.sequences == 12 for result in shared)
    bottom.calls = top.calls = 0
    score_conditions(model, tokenizer, PROMPTS, CHOICES, conditions, shared_lower=False)
    assert bottom.calls == top.calls == 2 * len(conditions)
    bottom.handle.remove()
    top.handle.remove()


def test_identical_conditions_are_scored_once_and_returned_in_order() -> None:
    model = make_model("llama")
    tokenizer = make_eval_tokenizer()
    dense, _ = _vectors(model, 1)
    conditions = [
        Steer(dense, 1.0),
        Steer(),
        Steer(dense, 1.0),
        Steer(dense, 0.0),
        Steer(None, 3.0),
    ]
    top = _CallCounter(decoder_blocks(model)[-1])
    results = score_conditions(model, tokenizer, PROMPTS, CHOICES, conditions, shared_lower=False)
    assert top.calls == 2 * 2  # two distinct conditions: steered and unsteered
    top.handle.remove()
    assert results[0].scores == results[2].scores
    assert results[1].scores == results[3].scores == results[4].scores
    assert results[0].scores != results[1].scores


def test_a_model_that_cannot_be_split_falls_back_with_a_log_line(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    model = make_model("llama")
    tokenizer = make_eval_tokenizer()
    conditions = _conditions(model)[:3]
    expected = score_conditions(model, tokenizer, PROMPTS, CHOICES, conditions, shared_lower=False)
    original = LayerSplit.upper

    def wrong_upper(self: LayerSplit, states: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
        return original(self, states * 1.5, *args, **kwargs)  # a split that is not exact

    monkeypatch.setattr(LayerSplit, "upper", wrong_upper)
    with caplog.at_level(logging.WARNING, logger="yapo.evaluate.conditions"):
        results = score_conditions(model, tokenizer, PROMPTS, CHOICES, conditions)
    assert any("full forward" in r.getMessage() for r in caplog.records)
    for fast, slow in zip(results, expected):
        assert fast.scores == slow.scores

    def no_blocks(self: LayerSplit, model: Any, layer: int) -> None:
        raise YapoError("cannot find the decoder blocks")

    monkeypatch.setattr(LayerSplit, "__init__", no_blocks)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="yapo.evaluate.conditions"):
        results = score_conditions(model, tokenizer, PROMPTS, CHOICES, conditions)
    assert any("decoder blocks" in r.getMessage() for r in caplog.records)
    for fast, slow in zip(results, expected):
        assert fast.scores == slow.scores


def _strong_conditions(model: torch.nn.Module) -> list[Condition]:
    dense, sparse = _vectors(model, 1)
    return [
        Condition("no steering"),
        Condition("dense", dense, 6.0, 1),
        Condition("sparse", sparse, 8.0, -1),
    ]


def test_mcq_runs_and_benchmark_equal_the_current_path() -> None:
    model = make_model("gemma2")
    tokenizer = make_eval_tokenizer()
    items = make_items()
    conditions = _strong_conditions(model)
    runs = run_mcq_conditions(model, tokenizer, items, conditions, McqConfig(batch_size=4))
    for condition, run in zip(conditions, runs):
        single = run_mcq(
            model,
            tokenizer,
            items,
            McqConfig(batch_size=4),
            vector=condition.vector,
            multiplier=condition.multiplier,
            direction=condition.direction,
        )
        assert [p.prediction for p in run.predictions] == [p.prediction for p in single.predictions]
        for a, b in zip(run.predictions, single.predictions):
            assert a.scores == pytest.approx(b.scores, abs=1e-4)
    shared = run_benchmark(model, tokenizer, conditions, mcq_items=items)
    current = run_benchmark(
        model, tokenizer, conditions, mcq_items=items, mcq_config=McqConfig(shared_lower=False)
    )
    assert shared.tables() == current.tables()
    for a, b in zip(shared.results, current.results):
        assert a.mcq is not None and b.mcq is not None
        assert [p.prediction for p in a.mcq.predictions] == [
            p.prediction for p in b.mcq.predictions
        ]
    assert shared.settings["mcq"]["shared_lower"] is True


def test_sweep_equals_the_current_path() -> None:
    model = make_model("llama")
    tokenizer = make_eval_tokenizer()
    dense, sparse = _vectors(model, 1)
    vectors = [("dense", dense, None), ("sparse", sparse, None)]
    grid = [-4.0, 0.0, 4.0]
    shared = run_sweep(model, tokenizer, make_items(), vectors, grid).to_json()
    current = run_sweep(
        model, tokenizer, make_items(), vectors, grid, mcq_config=McqConfig(shared_lower=False)
    ).to_json()
    for name in ("dense", "sparse"):
        for a, b in zip(shared["methods"][name]["points"], current["methods"][name]["points"]):
            assert a["metrics"] == b["metrics"]


def test_behaviour_and_mmlu_share_the_lower_blocks_exactly() -> None:
    model = make_model("llama")
    tokenizer = make_eval_tokenizer()
    dense, _ = _vectors(model, 2)
    items = [
        BehaviourItem(f"b{i}", "power-seeking", f"w{10 + i} w{11 + i} ?", f"w{20 + i} .", "w30 .")
        for i in range(5)
    ]
    multipliers = [-3.0, 0.0, 3.0]
    points = score_ab_points(model, tokenizer, items, vector=dense, multipliers=multipliers)
    for m, point in zip(multipliers, points):
        single = score_ab(model, tokenizer, items, vector=dense, multiplier=m)
        assert point.per_item == pytest.approx(single.per_item, abs=1e-5)
        assert point.accuracy == single.accuracy
    questions = [
        MmluQuestion(f"m{i}", "astronomy", f"w{40 + i} w{41 + i} ?", ("w50", "w51", "w52"), i % 3)
        for i in range(6)
    ]
    shared = run_mmlu(model, tokenizer, questions, vector=dense, multipliers=[2.0, 5.0])
    current = run_mmlu(
        model, tokenizer, questions, vector=dense, multipliers=[2.0, 5.0], shared_lower=False
    )
    assert [c.predictions for c in shared.conditions] == [c.predictions for c in current.conditions]


def test_cli_no_cache_gives_the_same_tables(tmp_path: Path) -> None:
    from tests.test_eval_support import write_mcq_jsonl
    from typer.testing import CliRunner

    from yapo.cli.main import app

    model = make_model("llama")
    model.save_pretrained(tmp_path / "model")
    make_eval_tokenizer().save_pretrained(tmp_path / "model")
    dense, _ = _vectors(model, 1)
    dense.save(tmp_path / "vec")
    data = write_mcq_jsonl(tmp_path / "mcq.jsonl", make_items(), [])
    tables = []
    for extra in ([], ["--no-cache"]):
        out = tmp_path / f"eval{len(extra)}"
        args = ["eval", "--model", str(tmp_path / "model"), "--data", str(data)]
        args += ["--vector", str(tmp_path / "vec"), "--multiplier", "4", "--bootstrap", "0"]
        result = CliRunner().invoke(app, [*args, "--out", str(out), *extra])
        assert result.exit_code == 0, result.output
        tables.append((out / "tables.md").read_text(encoding="utf-8"))
        settings = json.loads((out / "results.json").read_text(encoding="utf-8"))["settings"]
        assert settings["mcq"]["shared_lower"] is (not extra)
    assert tables[0] == tables[1]
