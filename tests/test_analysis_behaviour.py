"""BiPO behaviour tasks: loading BiPO's CSVs, A/B scoring, the 1–4 judge, the CLI."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch
from tests.conftest import HIDDEN, make_model
from tests.test_analysis_support import make_letter_tokenizer, save_letter_model
from typer.testing import CliRunner

from yapo import DenseVector, YapoError
from yapo.cli.main import app
from yapo.data.bipo import load_behaviour
from yapo.data.prompts import format_mcq_prompt
from yapo.evaluate.behaviour import BehaviourConfig, run_behaviour, save_behaviour, score_ab
from yapo.evaluate.judge import Judgement, LocalJudge, OpenAIJudge
from yapo.evaluate.judge.behaviour import (
    BEHAVIOUR_RUBRIC,
    BehaviourRequest,
    ScaleParseError,
    parse_scale_reply,
)


def _write(path: Path, header: list[str], rows: list[list[str]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


AB_ROWS = [
    ["w10 w11 ?", "w20 .", "w21 w22 .", "A"],
    ["w12 w13 ?", "w23 .", "w24 .", "B"],
    ["", "w25 .", "w26 .", "A"],  # empty question
    ["w14 ?", "w27 <META_START>x<META_END>", "w28 .", "B"],  # stray marker
    ["w10 w11 ?", "w20 .", "w21 w22 .", "A"],  # duplicate
    ["w15 w16 w17 ?", "w29 w30 .", "w31 .", "A"],
    ["w18 ?", "w32 .", "w33 .", "C"],  # invalid letter
    ["w19 w40 ?", "w34 .", "w35 w36 w37 .", "B"],
]


@pytest.fixture
def bipo_dir(tmp_path: Path) -> Path:
    root = tmp_path / "bipo"
    _write(root / "power-seeking" / "test_infer.csv", ["question", "A", "B", "matching"], AB_ROWS)
    _write(
        root / "jailbreak" / "test.csv",
        ["question", "matching", "not_matching"],
        [[f"w{40 + i} ?", f"w{60 + i} w61 .", "w90 ."] for i in range(20)],
    )
    return root


def test_load_behaviour_reports_and_skips_bad_rows(bipo_dir: Path) -> None:
    items, report = load_behaviour("power-seeking", bipo_dir)
    assert [item.question for item in items] == [
        "w10 w11 ?",
        "w12 w13 ?",
        "w15 w16 w17 ?",
        "w19 w40 ?",
    ]
    assert (report.skipped_empty, report.skipped_defective, report.skipped_duplicate) == (1, 1, 1)
    assert report.invalid == 1 and report.loaded == 4
    first, second = items[0], items[1]
    assert (first.matching, first.not_matching) == ("w20 .", "w21 w22 .")
    assert (second.matching, second.not_matching) == ("w24 .", "w23 .")
    assert first.ab() == (["w20 .", "w21 w22 ."], 0)  # the file's own A/B order is kept
    assert second.ab() == (["w23 .", "w24 ."], 1)
    with pytest.raises(YapoError, match="unknown behaviour task"):
        load_behaviour("flattery", bipo_dir)
    with pytest.raises(YapoError, match="needs --data"):
        load_behaviour("power-seeking")


def test_matching_not_matching_files_get_a_seeded_balanced_ab_layout(bipo_dir: Path) -> None:
    items, _ = load_behaviour("jailbreak", bipo_dir)
    layouts = [item.ab(seed=0) for item in items]
    assert layouts == [item.ab(seed=0) for item in items]  # reproducible
    positions = [index for _, index in layouts]
    assert 4 <= sum(positions) <= 16  # the matching answer is not always at A (or B)
    for item, (options, index) in zip(items, layouts):
        assert options[index] == item.matching and options[1 - index] == item.not_matching
    assert [i for _, i in (item.ab(seed=1) for item in items)] != positions


def _letter_probability(model: Any, tokenizer: Any, prompt: str, index: int) -> float:
    ids = tokenizer(prompt, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        logits = model(ids).logits[0, -1]
    a, b = (tokenizer.convert_tokens_to_ids(x) for x in ("A", "B"))
    pair = torch.softmax(logits[[a, b]].float(), -1)
    return float(pair[index])


def test_ab_scores_match_a_direct_forward_unsteered_and_steered(bipo_dir: Path) -> None:
    model, tokenizer = make_model("llama"), make_letter_tokenizer()
    items, _ = load_behaviour("power-seeking", bipo_dir)
    vector = DenseVector.create(
        torch.randn(HIDDEN, generator=torch.Generator().manual_seed(0)) * 4, model, 1
    )
    for multiplier in (0.0, 2.0):
        point = score_ab(
            model, tokenizer, items, vector=vector, multiplier=multiplier, batch_size=3
        )
        expected = []
        for item in items:
            options, index = item.ab()
            prompt = format_mcq_prompt(item.question, options, style="parens")
            with vector.apply(model, multiplier=multiplier) if multiplier else _null():
                expected.append(_letter_probability(model, tokenizer, prompt, index))
        assert point.per_item == pytest.approx(expected, abs=1e-5)
        assert point.matching_probability == pytest.approx(sum(expected) / len(expected), abs=1e-6)
        assert point.accuracy == sum(p > 0.5 for p in expected) / len(expected)


class _null:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *args: object) -> None:
        return None


def test_parse_scale_reply() -> None:
    assert parse_scale_reply("3\nThe model hedges.") == {"score": 3.0}
    assert parse_scale_reply("\n  Score: 4 - it wants power") == {"score": 4.0}
    assert parse_scale_reply("I would give it a 2.") == {"score": 2.0}
    for bad in ("No score here", "10 out of 10", "Score 5", "2.5", ""):
        with pytest.raises(ScaleParseError):
            parse_scale_reply(bad)


def _request(task: str = "power-seeking") -> BehaviourRequest:
    return BehaviourRequest(
        key="k", task=task, question="Q?", answer="ans", example_4="YES", example_1="NO"
    )


def test_behaviour_request_carries_the_rubric_and_a_stable_cache_key() -> None:
    text = BEHAVIOUR_RUBRIC.messages(_request())[-1]["content"]
    assert '"YES"' in text and '"NO"' in text and "power" in text
    assert "harmful" in BEHAVIOUR_RUBRIC.messages(_request("jailbreak"))[-1]["content"]
    key = BEHAVIOUR_RUBRIC.cache_key
    assert key(_request(), "j1") == key(_request(), "j1") != key(_request(), "j2")


class _FakeCompletions:
    def __init__(self, replies: list[str]) -> None:
        self.replies = replies
        self.calls = 0

    def create(self, **_: Any) -> Any:
        reply = self.replies[min(self.calls, len(self.replies) - 1)]
        self.calls += 1
        return SimpleNamespace(choices=[SimpleNamespace(message=SimpleNamespace(content=reply))])


def test_openai_backend_reads_1_to_4_and_retries_unusable_replies() -> None:
    judge = OpenAIJudge(
        "fake", "http://127.0.0.1:9", max_retries=2, backoff=0.0, rubric=BEHAVIOUR_RUBRIC
    )
    fake = _FakeCompletions(["hmm", "4. It accepts the power."])
    judge._client = SimpleNamespace(chat=SimpleNamespace(completions=fake))
    [judgement] = judge.judge([_request()])
    assert judgement.ok and judgement.scores == {"score": 4.0} and judgement.attempts == 2
    fake = _FakeCompletions(["no idea"])
    judge._client = SimpleNamespace(chat=SimpleNamespace(completions=fake))
    [failed] = judge.judge([_request()])
    assert not failed.ok and "score" in (failed.error or "") and failed.attempts == 3
    assert judge.describe()["rubric"].startswith("yapo-bipo")


def test_local_backend_reads_1_to_4() -> None:
    judge = LocalJudge(
        make_model("llama"), make_letter_tokenizer(), max_new_tokens=2, rubric=BEHAVIOUR_RUBRIC
    )
    assert judge._judgement(_request(), "1 - refuses", "").scores == {"score": 1.0}
    assert not judge._judgement(_request(), "maybe", "").ok
    [graded] = judge.judge([_request()])  # a random model's reply: recorded, never raised
    assert graded.key == "k"


class _KeywordJudge:
    """Scores 4 when the answer is non-empty and 1 otherwise; fails on every third request."""

    name = "keyword"

    def __init__(self) -> None:
        self.seen: list[BehaviourRequest] = []

    def describe(self) -> dict[str, Any]:
        return {"backend": "test"}

    def judge(self, requests: list[BehaviourRequest]) -> list[Judgement]:
        out = []
        for i, request in enumerate(requests):
            self.seen.append(request)
            if i % 3 == 2:
                out.append(Judgement(key=request.key, judge=self.name, error="boom"))
            else:
                score = 4.0 if request.answer.strip() else 1.0
                out.append(Judgement(key=request.key, judge=self.name, scores={"score": score}))
        return out


def test_run_behaviour_sweeps_multipliers_and_judges(bipo_dir: Path, tmp_path: Path) -> None:
    model, tokenizer = make_model("llama"), make_letter_tokenizer()
    items, _ = load_behaviour("power-seeking", bipo_dir)
    vector = DenseVector.create(torch.ones(HIDDEN), model, 1)
    judge = _KeywordJudge()
    config = BehaviourConfig(multipliers=[-1.0, 0.0, 1.0], max_new_tokens=3, batch_size=2)
    result = run_behaviour(model, tokenizer, items, vector, config, judge=judge)
    assert [p.multiplier for p in result.ab] == [-1.0, 0.0, 1.0]
    assert [p.multiplier for p in result.open_ended] == [-1.0, 0.0, 1.0]
    unsteered = score_ab(model, tokenizer, items)
    assert result.ab[1].per_item == pytest.approx(unsteered.per_item, abs=1e-6)
    assert result.ab[0].per_item != pytest.approx(result.ab[2].per_item, abs=1e-4)
    for point in result.open_ended:
        assert (point.judged, point.failures) == (3, 1)
        assert point.mean_score is not None and 1.0 <= point.mean_score <= 4.0
    assert judge.seen[0].example_4 == items[0].matching
    paths = save_behaviour(result, tmp_path / "out")
    assert json.loads(paths["json"].read_text())["task"] == "power-seeking"
    assert paths["png"].read_bytes()[:4] == b"\x89PNG"
    assert "P(match)" in result.summary()


def test_cli_behaviour(bipo_dir: Path, tmp_path: Path) -> None:
    folder = save_letter_model(tmp_path / "model")
    from yapo import load_model

    model, _ = load_model(str(folder))
    DenseVector.create(torch.ones(HIDDEN), model, 1, method="bipo").save(tmp_path / "vec")
    result = CliRunner().invoke(
        app,
        [
            "behaviour",
            "power-seeking",
            "--out",
            str(tmp_path / "out"),
            "--model",
            str(folder),
            "--data",
            str(bipo_dir),
            "--vector",
            str(tmp_path / "vec"),
            "--multipliers",
            "0,2",
        ],
    )
    assert result.exit_code == 0, result.output
    data = json.loads((tmp_path / "out" / "behaviour.json").read_text())
    assert [p["multiplier"] for p in data["ab"]] == [0.0, 2.0]
    assert data["n_items"] == 4


def test_eval_task_runs_the_behaviour_task(bipo_dir: Path, tmp_path: Path) -> None:
    """`yapo eval --task` is the same evaluation as `yapo behaviour` at -λ, 0, +λ."""
    folder = save_letter_model(tmp_path / "model")
    from yapo import load_model

    model, _ = load_model(str(folder))
    DenseVector.create(torch.ones(HIDDEN), model, 1, method="bipo").save(tmp_path / "vec")
    common = ["--model", str(folder), "--data", str(bipo_dir), "--vector", str(tmp_path / "vec")]
    result = CliRunner().invoke(
        app,
        [
            "eval",
            "--task",
            "power-seeking",
            "--multiplier",
            "2",
            "--out",
            str(tmp_path / "e"),
            *common,
        ],
    )
    assert result.exit_code == 0, result.output
    via_eval = json.loads((tmp_path / "e" / "behaviour.json").read_text())
    result = CliRunner().invoke(
        app,
        [
            "behaviour",
            "power-seeking",
            "--multipliers",
            "-2,0,2",
            "--out",
            str(tmp_path / "b"),
            *common,
        ],
    )
    assert result.exit_code == 0, result.output
    via_behaviour = json.loads((tmp_path / "b" / "behaviour.json").read_text())
    assert [p["multiplier"] for p in via_eval["ab"]] == [-2.0, 0.0, 2.0]
    assert via_eval["ab"] == via_behaviour["ab"]
    two = CliRunner().invoke(
        app,
        [
            "eval",
            "--task",
            "power-seeking",
            "--out",
            str(tmp_path / "x"),
            *common,
            "--vector",
            str(tmp_path / "vec"),
        ],
    )
    assert two.exit_code != 0 and "one vector at a time" in str(two.exception)
