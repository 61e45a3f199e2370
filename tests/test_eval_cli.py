"""``yapo eval``, ``yapo sweep`` and ``yapo report`` end to end on a tiny saved model."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from tests.conftest import HIDDEN, make_model, make_sae
from tests.test_eval_support import (
    Script,
    make_eval_tokenizer,
    make_items,
    make_open_questions,
    serve_judge,
    write_mcq_jsonl,
)
from typer.testing import CliRunner

from yapo import DenseVector, SparseVector, YapoError
from yapo.cli.main import app
from yapo.evaluate.benchmark import BASELINE, MetricConfig
from yapo.evaluate.mcq import run_mcq
from yapo.evaluate.sweep import parse_multipliers, run_sweep
from yapo.gather import convergence_row, read_training_run

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def server() -> Iterator[tuple[str, Script]]:
    with serve_judge() as running:
        yield running


@pytest.fixture
def setup(tmp_path: Path) -> dict[str, Path]:
    """A saved tiny model, a BiPO-like dense vector, a YaPO-like sparse one, and data."""
    model = make_model("llama")
    model_dir = tmp_path / "model"
    model.save_pretrained(model_dir)
    make_eval_tokenizer().save_pretrained(model_dir)
    g = torch.Generator().manual_seed(5)
    dense = DenseVector.create(torch.randn(HIDDEN, generator=g) * 3, model, 1, method="bipo")
    sae = make_sae("jumprelu")
    sae_dir = tmp_path / "sae"
    sae.save(sae_dir)
    sparse = SparseVector.create(torch.randn(sae.d_sae, generator=g), model, 1, sae, method="yapo")
    bad = [
        json.dumps({**make_items()[0].to_json(), "id": "broken", "answer": 7}),
        json.dumps(make_items()[1].to_json()),  # a duplicate
    ]
    open_path = tmp_path / "open.jsonl"
    open_path.write_text(
        "".join(json.dumps(q.to_json()) + "\n" for q in make_open_questions()), encoding="utf-8"
    )
    return {
        "model": model_dir,
        "dense": dense.save(tmp_path / "bipo-vec"),
        "sparse": sparse.save(tmp_path / "yapo-vec"),
        "sae": sae_dir,
        "mcq": write_mcq_jsonl(tmp_path / "mcq.jsonl", make_items(), bad),
        "open": open_path,
        "root": tmp_path,
    }


def _invoke(args: list[str]) -> str:
    result = CliRunner().invoke(app, args)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    assert result.exit_code == 0, result.output
    return result.output


def test_eval_compares_baseline_and_vectors_side_by_side(
    setup: dict[str, Path], server: tuple[str, Script]
) -> None:
    url, script = server
    out = setup["root"] / "eval"
    output = _invoke(
        [
            "eval",
            "--model", str(setup["model"]),
            "--data", str(setup["mcq"]),
            "--no-strict",
            "--vector", str(setup["dense"]),
            "--vector", f"yapo-es={setup['sparse']}",
            "--sae", str(setup["sae"]),
            "--multiplier", "2",
            "--open-data", str(setup["open"]),
            "--judge-url", url,
            "--judge-model", "judge-test",
            "--no-judge-cache",
            "--max-new-tokens", "4",
            "--bootstrap", "50",
            "--out", str(out),
        ]
    )  # fmt: skip
    results = json.loads((out / "results.json").read_text(encoding="utf-8"))
    names = [c["condition"]["name"] for c in results["conditions"]]
    assert names == [BASELINE, "bipo", "yapo-es"]
    assert results["conditions"][1]["condition"]["multiplier"] == 2.0
    assert results["conditions"][2]["condition"]["kind"] == "sparse"
    report = results["settings"]["mcq_load_report"]
    assert report["loaded"] == 8 and report["invalid"] == 1 and report["skipped_duplicate"] == 1
    assert results["settings"]["judge"]["model"] == "judge-test"
    for condition in results["conditions"]:
        assert condition["mcq"]["answers"] == 16 and condition["mcq"]["unparseable"] == 0
        assert condition["mcq"]["throughput"]["sequences"] == 48
        assert condition["open"]["answers"] == 6 and condition["open"]["judge_failures"] == 0
        overall = condition["mcq"]["metrics"]["rows"][-1]
        assert overall["level"] == "overall" and overall["n_items"] == 8
    # Steering with λ = 2 changes what the model prefers.
    predictions = [
        json.loads(line)
        for line in (out / "mcq_predictions.jsonl").read_text(encoding="utf-8").splitlines()
    ]
    assert len(predictions) == 3 * 16
    base = [p["scores"] for p in predictions if p["condition"] == BASELINE]
    steered = [p["scores"] for p in predictions if p["condition"] == "bipo"]
    assert base != steered
    answers = (out / "open_answers.jsonl").read_text(encoding="utf-8").splitlines()
    assert len(answers) == 3 * 6 and json.loads(answers[0])["judgement"]["total"] == 7.5

    tables = json.loads((out / "tables.json").read_text(encoding="utf-8"))
    assert set(tables) == {"table1", "table2", "table3"}
    labels = [c["label"] for c in tables["table1"]["columns"]]
    assert labels[:3] == [f"{BASELINE} · Loc", f"{BASELINE} · Non-loc", f"{BASELINE} · Mixed"]
    assert len(labels) == 9
    markdown = (out / "tables.md").read_text(encoding="utf-8")
    assert "Table 1 — MCQ accuracy (%)" in markdown and "Table 3" in markdown
    assert "| **all** | **average** | 8 |" in markdown
    assert "| es | Spain | 3 |" in markdown
    table2 = tables["table2"]["rows"][-1]["cells"][f"{BASELINE}|open|mixed"]
    assert table2["value"] == pytest.approx(0.75)
    assert "Table 1" in output
    assert len(script.bodies) == 18


def test_eval_refuses_bad_data_and_bad_options(setup: dict[str, Path]) -> None:
    out = str(setup["root"] / "refused")
    base = ["eval", "--model", str(setup["model"]), "--out", out]
    with pytest.raises(YapoError, match="invalid record"):
        _invoke([*base, "--data", str(setup["mcq"])])  # strict by default
    with pytest.raises(YapoError, match="needs a judge"):
        _invoke(
            [*base, "--data", str(setup["mcq"]), "--no-strict", "--open-data", str(setup["open"])]
        )
    with pytest.raises(YapoError, match="alpha"):
        _invoke([*base, "--data", str(setup["mcq"]), "--no-strict", "--alpha", "2"])
    with pytest.raises(YapoError, match="no items for Atlantis"):
        _invoke([*base, "--data", str(setup["mcq"]), "--no-strict", "--countries", "Atlantis"])
    with pytest.raises(YapoError, match="not found"):
        _invoke([*base, "--data", str(setup["mcq"]), "--no-strict", "--vector", "nowhere"])
    with pytest.raises(YapoError, match="both named"):
        _invoke(
            [*base, "--data", str(setup["mcq"]), "--no-strict",
             "--vector", f"a={setup['dense']}", "--vector", f"a={setup['dense']}"]
        )  # fmt: skip
    assert not Path(out).exists()


def test_eval_runs_on_the_demo_data(setup: dict[str, Path], server: tuple[str, Script]) -> None:
    url, script = server
    out = setup["root"] / "demo"
    _invoke(
        ["eval", "--model", str(setup["model"]), "--data", "demo", "--limit", "6",
         "--choices", "letter", "--bootstrap", "0", "--open-data", "demo", "--countries", "Egypt",
         "--judge-url", url, "--judge-model", "judge-test", "--judge-cache",
         str(setup["root"] / "cache.jsonl"), "--max-new-tokens", "2", "--out", str(out)]
    )  # fmt: skip
    results = json.loads((out / "results.json").read_text(encoding="utf-8"))
    assert results["conditions"][0]["mcq"]["answers"] == 12
    assert results["conditions"][0]["open"]["answers"] == 12
    assert results["settings"]["open_data"] == "demo"
    assert len(script.bodies) == 12 and (setup["root"] / "cache.jsonl").is_file()


def test_sweep_shares_lambda_zero_and_writes_json_and_png(setup: dict[str, Path]) -> None:
    out = setup["root"] / "sweep"
    _invoke(
        ["sweep", "--model", str(setup["model"]), "--data", str(setup["mcq"]), "--no-strict",
         "--vector", str(setup["dense"]), "--vector", str(setup["sparse"]), "--sae", str(setup["sae"]),
         "--multipliers", "1,-1,0", "--bootstrap", "20", "--out", str(out)]
    )  # fmt: skip
    sweep = json.loads((out / "sweep.json").read_text(encoding="utf-8"))
    assert sweep["multipliers"] == [-1.0, 0.0, 1.0]
    assert set(sweep["methods"]) == {"bipo", "yapo"}
    zero = [m["points"][1] for m in sweep["methods"].values()]
    assert zero[0]["multiplier"] == 0.0 and zero[0]["overall"] == zero[1]["overall"]
    assert (out / "sweep.png").read_bytes().startswith(PNG_MAGIC)
    assert "| bipo | -1 |" in (out / "sweep.md").read_text(encoding="utf-8")


def test_sweep_points_equal_direct_runs() -> None:
    model = make_model("llama")
    tokenizer = make_eval_tokenizer()
    items = make_items()
    g = torch.Generator().manual_seed(2)
    vector = DenseVector.create(torch.randn(HIDDEN, generator=g) * 3, model, 2, method="bipo")
    options = MetricConfig(samples=30, seed=4)
    result = run_sweep(
        model, tokenizer, items, [("bipo", vector, None)], [1.5, 0.0], metrics=options
    )
    assert [p.multiplier for p in result.methods["bipo"]] == [0.0, 1.5]
    for point, run in [
        (result.methods["bipo"][0], run_mcq(model, tokenizer, items)),
        (
            result.methods["bipo"][1],
            run_mcq(model, tokenizer, items, vector=vector, multiplier=1.5),
        ),
    ]:
        assert point.metrics.to_json() == options.summarize(run.pairs()).to_json()
    assert parse_multipliers("2, -2,0,0") == [-2.0, 0.0, 2.0]
    with pytest.raises(YapoError, match="multiplier"):
        parse_multipliers("1,x")


def test_convergence_row_by_hand(tmp_path: Path) -> None:
    # 40 steps, window 2: smoothed = mean of the last two losses.
    losses = [0.5] * 10 + [0.2] * 10 + [0.05] * 20
    run = read_training_run(_training_run(tmp_path / "r", "yapo", losses))
    assert run.skipped_lines == 1 and run.label == "yapo (r)"
    # step 11 smooths to 0.35, step 12 to 0.2 (< 0.3); step 21 to 0.125, step 22 to 0.05.
    assert convergence_row(run) == ["yapo (r)", "40", "0.050", "0.050", "12", "22"]


def _training_run(folder: Path, method: str, losses: list[float]) -> Path:
    folder.mkdir(parents=True)
    config = {"settings": {"method": method, "layer": 1}}  # the trainer's layout
    (folder / "config.json").write_text(json.dumps(config), encoding="utf-8")
    lines = [
        json.dumps({"step": i + 1, "epoch": 0, "d": 1 if i % 2 else -1, "loss": loss})
        for i, loss in enumerate(losses)
    ]
    lines.insert(1, "{not json")
    lines.insert(3, json.dumps({"kind": "eval", "step": 2, "loss": 99.0}))  # not a train step
    (folder / "metrics.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return folder


def test_report_gathers_training_eval_and_sweep_runs(setup: dict[str, Path]) -> None:
    root = setup["root"]
    runs = root / "runs"
    _training_run(runs / "yapo-run", "yapo", [0.69 * 0.9**i for i in range(60)])
    _training_run(runs / "bipo-run", "bipo", [0.69 - 0.003 * i for i in range(60)])
    _invoke(
        ["eval", "--model", str(setup["model"]), "--data", str(setup["mcq"]), "--no-strict",
         "--vector", str(setup["dense"]), "--bootstrap", "20", "--out", str(runs / "eval")]
    )  # fmt: skip
    _invoke(
        ["sweep", "--model", str(setup["model"]), "--data", str(setup["mcq"]), "--no-strict",
         "--vector", str(setup["dense"]), "--multipliers", "0,1", "--bootstrap", "0",
         "--out", str(root / "sweep")]
    )  # fmt: skip
    eval_tables = json.loads((runs / "eval" / "tables.json").read_text(encoding="utf-8"))
    assert set(eval_tables) == {"table1", "table3"}  # no open-ended data, no Table 2
    assert [c["label"] for c in eval_tables["table3"]["columns"]] == [
        f"{BASELINE} · MCQ RCA",
        f"{BASELINE} · MCQ PNLG",
        "bipo · MCQ RCA",
        "bipo · MCQ PNLG",
    ]
    (root / "empty").mkdir()
    out = root / "report"
    printed = _invoke(
        ["report", str(runs), str(root / "sweep"), str(root / "empty"), "--out", str(out)]
    )
    assert printed.strip() == str(out / "report.md")
    text = (out / "report.md").read_text(encoding="utf-8")
    assert "## Training loss" in text and "![loss curves](loss_curves.png)" in text
    assert (
        "| yapo-run | 60 |" in text and "| bipo-run | 60 | 0.516 | 0.516 | never | never |" in text
    )
    assert "Table 1 — MCQ accuracy (%)" in text and "## Sweep:" in text
    assert "Folders with nothing to report" in text and "empty" in text
    for image in out.glob("*.png"):
        assert image.read_bytes().startswith(PNG_MAGIC)
    assert len(list(out.glob("*.png"))) == 3  # loss curves, accuracy bars, sweep
    with pytest.raises(YapoError, match="none of the folders"):
        _invoke(["report", str(root / "empty"), "--out", str(root / "r2")])
