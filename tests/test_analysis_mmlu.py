"""MMLU-format general-knowledge check: file layouts, scoring, the steered delta, the CLI."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import pytest
import torch
from tests.conftest import HIDDEN, make_model
from tests.test_analysis_support import make_letter_tokenizer, save_letter_model
from typer.testing import CliRunner

from yapo import DenseVector, YapoError, load_model
from yapo.cli.main import app
from yapo.data.mmlu import MmluQuestion, load_mmlu
from yapo.data.prompts import format_mcq_prompt
from yapo.evaluate.mmlu import mmlu_prompt, run_mmlu


def _csv(path: Path, rows: list[list[Any]], header: list[str] | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        if header:
            writer.writerow(header)
        writer.writerows(rows)
    return path


@pytest.fixture
def mmlu_dir(tmp_path: Path) -> Path:
    """A synthetic MMLU folder in the three layouts (sentences of tiny-vocabulary words)."""
    root = tmp_path / "mmlu"
    # original layout: no header, answer letter last, subject from the file name
    _csv(
        root / "test" / "astronomy_test.csv",
        [
            [
                f"w{10 + i} w{20 + i} ?",
                f"w{30 + i}",
                f"w{40 + i}",
                f"w{50 + i}",
                f"w{60 + i}",
                "ABCD"[i % 4],
            ]
            for i in range(6)
        ]
        + [["w9 ?", "w1", "w2", "w3", "w4", "E"]],  # invalid answer letter
    )
    # a header and an index answer
    _csv(
        root / "test" / "law.csv",
        [["w70 w71 ?", "w72", "w73", "w74", "w75", 2], ["", "w72", "w73", "w74", "w75", 1]],
        header=["question", "A", "B", "C", "D", "answer"],
    )
    # cais/mmlu columns as JSONL
    rows = [
        {
            "question": f"w{80 + i} ?",
            "subject": "virology",
            "choices": [f"w{90 + i}", f"w{100 + i}", f"w{110 + i}"],
            "answer": i % 3,
        }
        for i in range(4)
    ]
    (root / "virology.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return root


def test_load_mmlu_reads_the_three_layouts(mmlu_dir: Path) -> None:
    questions, report = load_mmlu(mmlu_dir)
    by_subject: dict[str, list[MmluQuestion]] = {}
    for q in questions:
        by_subject.setdefault(q.subject, []).append(q)
    assert {s: len(v) for s, v in by_subject.items()} == {"astronomy": 6, "law": 1, "virology": 4}
    first = by_subject["astronomy"][0]
    assert first.choices == ("w30", "w40", "w50", "w60") and first.answer == 0
    assert by_subject["astronomy"][3].answer == 3
    assert by_subject["law"][0].answer == 2
    assert by_subject["virology"][1].choices == ("w91", "w101", "w111")
    assert by_subject["virology"][1].answer == 1
    assert report.invalid == 1 and report.skipped_empty == 1 and report.loaded == 11
    with pytest.raises(YapoError, match="not found"):
        load_mmlu(mmlu_dir / "missing.csv")


def _predict(model: Any, tokenizer: Any, question: MmluQuestion) -> int:
    ids = tokenizer(format_mcq_prompt(question.question, question.choices), return_tensors="pt")
    with torch.no_grad():
        logits = model(ids["input_ids"]).logits[0, -1]
    letters = [tokenizer.convert_tokens_to_ids(x) for x in "ABCD"[: len(question.choices)]]
    return int(logits[letters].argmax())


def test_run_mmlu_accuracy_and_delta_match_a_direct_forward(mmlu_dir: Path) -> None:
    model, tokenizer = make_model("llama"), make_letter_tokenizer()
    questions, _ = load_mmlu(mmlu_dir)
    vector = DenseVector.create(
        torch.randn(HIDDEN, generator=torch.Generator().manual_seed(1)) * 6, model, 2
    )
    result = run_mmlu(model, tokenizer, questions, vector=vector, multipliers=[3.0], batch_size=4)
    base, steered = result.conditions
    plain = [_predict(model, tokenizer, q) for q in questions]
    with vector.apply(model, multiplier=3.0):
        pushed = [_predict(model, tokenizer, q) for q in questions]
    assert base.predictions == plain and steered.predictions == pushed
    right = [float(p == q.answer) for p, q in zip(plain, questions)]
    right_steered = [float(p == q.answer) for p, q in zip(pushed, questions)]
    assert base.accuracy == pytest.approx(sum(right) / len(right))
    assert steered.delta == pytest.approx((sum(right_steered) - sum(right)) / len(right))
    assert steered.flips_to_correct - steered.flips_to_wrong == round(steered.delta * len(right))
    assert set(base.per_subject) == {"astronomy", "law", "virology"}
    assert result.subjects == {"astronomy": 6, "law": 1, "virology": 4}
    assert "Δ=" in result.summary()
    only_base = run_mmlu(model, tokenizer, questions)
    assert [c.multiplier for c in only_base.conditions] == [0.0]


def test_few_shot_prompt_uses_other_questions_of_the_subject(mmlu_dir: Path) -> None:
    questions, _ = load_mmlu(mmlu_dir)
    astronomy = [q for q in questions if q.subject == "astronomy"]
    prompt = mmlu_prompt(astronomy[0], astronomy[1:3])
    assert prompt.startswith(
        "The following are multiple choice questions (with answers) about astronomy."
    )
    assert prompt.count("Answer:") == 3 and prompt.endswith("Answer:")
    assert "Answer: B" in prompt  # astronomy[1]'s answer
    model, tokenizer = make_model("llama"), make_letter_tokenizer()
    result = run_mmlu(model, tokenizer, astronomy, shots=2)
    assert result.shots == 2
    with pytest.raises(YapoError, match="2-shot"):
        run_mmlu(model, tokenizer, [q for q in questions if q.subject == "law"], shots=2)


def test_cli_mmlu(mmlu_dir: Path, tmp_path: Path) -> None:
    folder = save_letter_model(tmp_path / "model")
    model, _ = load_model(str(folder))
    DenseVector.create(torch.ones(HIDDEN), model, 1, method="bipo").save(tmp_path / "vec")
    result = CliRunner().invoke(
        app,
        [
            "mmlu",
            str(mmlu_dir),
            "--model",
            str(folder),
            "--vector",
            str(tmp_path / "vec"),
            "--multipliers",
            "1,4",
            "--out",
            str(tmp_path / "out"),
        ],
    )
    assert result.exit_code == 0, result.output
    data = json.loads((tmp_path / "out" / "mmlu.json").read_text())
    assert [c["multiplier"] for c in data["conditions"]] == [0.0, 1.0, 4.0]
    assert data["conditions"][0]["n"] == 11
