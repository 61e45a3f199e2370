"""Run folders, bit-identical resume, the ``yapo train`` command, and bad input."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from tests.conftest import make_model, make_sae, make_tokenizer
from tests.methods_support import tiny_pairs, write_jsonl
from typer.testing import CliRunner

from yapo.cli.main import app
from yapo.errors import YapoError
from yapo.methods import train
from yapo.vectors import load_vector


class Killed(Exception):
    """Stands in for a process killed mid-run."""


def _run(out: Path, method: str = "bipo", **kwargs: Any) -> Any:
    settings: dict[str, Any] = {
        "learning_rate": 0.05,
        "lr_scale": 1.0,
        "warmup_steps": 2,
        "epochs": 3,
        "batch_size": 4,
        "progress": False,
    }
    settings.update(kwargs)
    return train(
        method,
        data=settings.pop("data", tiny_pairs(12)),
        eval_data=settings.pop("eval_data", tiny_pairs(4, seed=9)),
        model=settings.pop("model", None) or make_model("llama"),
        tokenizer=make_tokenizer(),
        layer=1,
        sae=make_sae() if method == "yapo" else None,
        out=out,
        **settings,
    )


def test_run_folder_has_everything(tmp_path: Path) -> None:
    result = _run(tmp_path / "run", method="yapo")
    run = tmp_path / "run"
    config = json.loads((run / "config.json").read_text())
    assert config["settings"]["method"] == "yapo" and config["finished"] is True
    assert config["settings"]["beta"] == 0.1 and config["steps"] == 9
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    train_records = [r for r in records if r["kind"] == "train"]
    eval_records = [r for r in records if r["kind"] == "eval"]
    assert [r["step"] for r in train_records] == list(range(1, 10))
    for r in train_records:
        assert {"step", "epoch", "d", "loss", "vector_norm", "nonzero", "lr"} <= r.keys()
        assert f"reward_accuracy_d{r['d']:+d}" in r
    assert [r["epoch"] for r in eval_records] == [1, 2, 3]
    for r in eval_records:
        for key in ("eval_loss", "eval_loss_d+1", "eval_loss_d-1"):
            assert 0 < r[key] < 2
        assert 0 <= r["eval_reward_accuracy_d+1"] <= 1
        assert 0 <= r["eval_reward_accuracy_d-1"] <= 1
    names = sorted(p.name for p in (run / "checkpoints").iterdir())
    assert names == ["epoch-0001", "epoch-0002", "epoch-0003"]
    assert (run / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    vector = load_vector(run / "vector", sae=make_sae())
    assert torch.equal(vector.vector, result.vector.vector)
    assert vector.meta.method == "yapo" and vector.meta.hyperparameters["epochs"] == 3


@pytest.mark.parametrize(
    ("method", "kill_at", "checkpoint_every"),
    [("bipo", 5, None), ("yapo", 8, 3)],
)
def test_killed_and_resumed_run_is_bit_identical(
    tmp_path: Path, method: str, kill_at: int, checkpoint_every: int | None
) -> None:
    whole = _run(tmp_path / "whole", method, checkpoint_every=checkpoint_every)

    def kill(record: dict[str, Any]) -> None:
        if record["step"] == kill_at:  # mid-epoch (4 steps per epoch)
            raise Killed

    with pytest.raises(Killed):
        _run(tmp_path / "cut", method, checkpoint_every=checkpoint_every, callbacks=[kill])
    steps_on_disk = [
        json.loads(line)["step"] for line in (tmp_path / "cut" / "metrics.jsonl").open()
    ]
    assert max(steps_on_disk) == kill_at  # the log ran past the newest checkpoint
    resumed = _run(tmp_path / "cut", method, checkpoint_every=checkpoint_every, resume=True)
    assert torch.equal(resumed.vector.vector, whole.vector.vector)

    def comparable(path: Path) -> list[dict[str, Any]]:
        lines = [json.loads(line) for line in path.open()]
        return [{k: v for k, v in r.items() if k != "seconds"} for r in lines]

    assert comparable(tmp_path / "cut" / "metrics.jsonl") == comparable(
        tmp_path / "whole" / "metrics.jsonl"
    )


def test_resumed_run_makes_the_same_early_stopping_decisions(tmp_path: Path) -> None:
    from dataclasses import replace

    from tests.methods_support import steerable_model

    # two validation pairs prefer the other answer: the validation loss rises, training stops
    validation = [
        replace(p, chosen=p.rejected, rejected=p.chosen) if i < 2 else p
        for i, p in enumerate(tiny_pairs(8, seed=5))
    ]
    settings: dict[str, Any] = {
        "epochs": 12,
        "learning_rate": 0.1,
        "schedule": "constant_with_warmup",
        "early_stopping_patience": 2,
        "eval_data": validation,
    }
    whole = _run(tmp_path / "whole", model=steerable_model(), **settings)
    config = json.loads((tmp_path / "whole" / "config.json").read_text())
    assert config["stopped_early"] is True and config["steps"] < 36  # it did stop early

    def kill(record: dict[str, Any]) -> None:
        if record["step"] == config["steps"] - 2:  # after the best, before the stop
            raise Killed

    with pytest.raises(Killed):
        _run(tmp_path / "cut", model=steerable_model(), callbacks=[kill], **settings)
    resumed = _run(tmp_path / "cut", model=steerable_model(), resume=True, **settings)
    again = json.loads((tmp_path / "cut" / "config.json").read_text())
    for key in ("steps", "best_step", "best_eval_loss", "stopped_early"):
        assert again[key] == config[key]
    assert torch.equal(resumed.vector.vector, whole.vector.vector)


def test_resume_with_other_settings_and_reuse_are_refused(tmp_path: Path) -> None:
    _run(tmp_path / "run", epochs=1)
    with pytest.raises(YapoError, match="already holds a training run"):
        _run(tmp_path / "run", epochs=1)
    with pytest.raises(YapoError, match="learning_rate"):
        _run(tmp_path / "run", epochs=1, learning_rate=0.1, resume=True)
    result = _run(tmp_path / "run", epochs=2, overwrite=True)
    assert result.steps == 6


def _summary(output: str) -> dict[str, Any]:
    """The --json line (stderr progress text may precede it on the same line)."""
    return json.loads(output[output.rindex('{"run"') :].splitlines()[0])  # type: ignore[no-any-return]


def test_cli_train_writes_a_run(tmp_path: Path, saved_model_dir: Path) -> None:
    data = write_jsonl(tmp_path / "pairs.jsonl", tiny_pairs(8))
    runner = CliRunner()
    args = [
        "train", "--method", "bipo", "--model", str(saved_model_dir), "--layer", "1",
        "--data", str(data), "--out", str(tmp_path / "run"), "--epochs", "2",
        "--warmup-steps", "1", "--lr", "0.05", "--no-progress", "--json",
    ]  # fmt: skip
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    summary = _summary(result.output)
    assert summary["steps"] == 4 and summary["nonzero"] == 32
    assert (tmp_path / "run" / "vector" / "vector.safetensors").is_file()
    result = runner.invoke(app, [*args[:-2], "--resume", "--no-progress", "--json"])
    assert result.exit_code == 0, result.output  # finished run: resume has nothing to do
    assert _summary(result.output)["steps"] == 4


def test_bad_data_gives_line_numbered_errors(tmp_path: Path, saved_model_dir: Path) -> None:
    lines = [
        json.dumps({"prompt": "w5 w6", "chosen": "w70", "rejected": "w90"}),
        json.dumps({"prompt": "w5 w7", "chosen": "w71", "rejected": "w91"}),
        "{not json",
        json.dumps({"prompt": "w5 w8", "chosen": "w72", "rejected": "w92"}),
    ]
    bad = tmp_path / "bad.jsonl"
    bad.write_text("\n".join(lines) + "\n")
    with pytest.raises(YapoError) as caught:
        _run(tmp_path / "run", data=str(bad))
    assert "bad.jsonl:3: not valid JSON" in str(caught.value)
    result = CliRunner().invoke(
        app,
        ["train", "--method", "caa", "--model", str(saved_model_dir), "--layer", "1",
         "--data", str(bad), "--out", str(tmp_path / "cli")],
    )  # fmt: skip
    assert isinstance(result.exception, YapoError) and "bad.jsonl:3" in str(result.exception)
