"""The ``yapo data`` command group."""

from __future__ import annotations

import json
from pathlib import Path

from tests.test_data_blend import write_blend
from typer.testing import CliRunner

from yapo.cli.main import app
from yapo.data.cultural import load_mcq
from yapo.data.preferences import load_preferences

runner = CliRunner()


def test_validate_reports_and_exit_codes(tmp_path: Path) -> None:
    good = tmp_path / "good.jsonl"
    good.write_text(
        json.dumps({"prompt": "p", "chosen": "Yes.", "rejected": "No."})
        + "\n"
        + json.dumps({"prompt": "p", "chosen": "Yes.", "rejected": "No."})
        + "\n",
        encoding="utf-8",
    )
    result = runner.invoke(app, ["data", "validate", str(good)])
    assert result.exit_code == 0, result.output
    assert "loaded 1 of 2" in result.output and f"{good}:2: same prompt" in result.output
    bad = tmp_path / "bad.jsonl"
    bad.write_text("{oops\n", encoding="utf-8")
    result = runner.invoke(app, ["data", "validate", str(bad)])
    assert result.exit_code == 1 and f"{bad}:1: not valid JSON" in result.output
    result = runner.invoke(app, ["data", "validate", "demo", "--kind", "mcq", "--json"])
    assert result.exit_code == 0 and json.loads(result.output)["invalid"] == 0


def test_to_pairs_and_split(tmp_path: Path) -> None:
    out = tmp_path / "pairs.jsonl"
    result = runner.invoke(
        app,
        [
            "data",
            "to-pairs",
            "demo",
            "--policy",
            "western",
            "--countries",
            "Spain",
            "--settings",
            "localized",
            "--out",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    pairs, _ = load_preferences(out)
    spain = [
        i
        for i in load_mcq(Path(runner.invoke(app, ["data", "demo"]).output.strip()))[0]
        if i.country == "Spain"
    ]
    assert len(pairs) == len(spain) and {p.setting for p in pairs} == {"localized"}
    train, test = tmp_path / "train.jsonl", tmp_path / "test.jsonl"
    result = runner.invoke(
        app,
        [
            "data",
            "split",
            str(out),
            "--test-fraction",
            "0.25",
            "--train-out",
            str(train),
            "--test-out",
            str(test),
        ],
    )
    assert result.exit_code == 0, result.output
    train_ids = {p.question_id for p in load_preferences(train)[0]}
    test_ids = {p.question_id for p in load_preferences(test)[0]}
    assert train_ids and test_ids and not train_ids & test_ids


def test_convert_blend_command(tmp_path: Path) -> None:
    root = write_blend(tmp_path / "blend")
    out, report = tmp_path / "mcq.jsonl", tmp_path / "report.json"
    result = runner.invoke(
        app,
        [
            "data",
            "convert-blend",
            "--blend-dir",
            str(root),
            "--countries",
            "Spain,Mexico",
            "--out",
            str(out),
            "--report",
            str(report),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "Spain: 9 question(s); kept en: 3" in result.output
    items, _ = load_mcq(out)
    assert len(items) == json.loads(report.read_text())["kept"] > 0
    result = runner.invoke(
        app,
        [
            "data",
            "convert-blend",
            "--blend-dir",
            str(root),
            "--countries",
            "Narnia",
            "--out",
            str(out),
        ],
    )
    assert result.exit_code != 0


def test_convert_paper_command(tmp_path: Path) -> None:
    from tests.test_data_cultural import jsonl, paper_rows

    source = jsonl(tmp_path / "paper.jsonl", paper_rows())
    result = runner.invoke(
        app, ["data", "convert-paper", str(source), "--out-dir", str(tmp_path / "o")]
    )
    assert result.exit_code == 0, result.output
    assert len(load_mcq(tmp_path / "o" / "mcq.jsonl")[0]) == 2
    assert len(load_preferences(tmp_path / "o" / "pairs.jsonl")[0]) == 8
