"""Per-country comparison (`yapo compare`) on a tiny model and a random SAE."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import fields
from pathlib import Path

import pytest
import torch
from tests.conftest import make_sae

from yapo import YapoError
from yapo.compare import (
    CompareConfig,
    comparison_training,
    country_folder_name,
    run_comparison,
    select_items,
)
from yapo.data.demo import load_demo_mcq
from yapo.methods.preference import PreferenceConfig


def _settings(model_dir: Path, sae_dir: Path, **overrides: object) -> CompareConfig:
    """A small comparison; an override that only the trainer has goes to ``training``."""
    trainer_only = PreferenceConfig.field_names() - {f.name for f in fields(CompareConfig)}
    training: dict[str, object] = {"epochs": 1, "warmup_steps": 1}
    training.update({k: v for k, v in overrides.items() if k in trainer_only})
    base: dict[str, object] = {
        "model": str(model_dir),
        "sae": str(sae_dir),
        "layer": 1,
        "max_questions": 4,
        "training": comparison_training(**training),
    }
    base.update({k: v for k, v in overrides.items() if k not in trainer_only})
    return CompareConfig(**base)  # type: ignore[arg-type]


def test_each_country_gets_its_own_vectors_and_the_merged_table_agrees(
    saved_model_dir: Path, tmp_path: Path
) -> None:
    sae_dir = tmp_path / "sae"
    make_sae("jumprelu").save(sae_dir)
    items, _ = load_demo_mcq(countries=["Egypt", "Spain"], languages=["en"])
    out = tmp_path / "cmp"
    messages: list[str] = []
    result = run_comparison(
        items,
        out,
        _settings(saved_model_dir, sae_dir, methods=("yapo", "caa")),
        countries=["Spain", "Egypt"],
        log=messages.append,
    )
    for country in ("Spain", "Egypt"):
        for method in ("yapo", "caa"):
            run = out / country / "runs" / method
            assert (run / "vector" / "vector.safetensors").is_file()
        assert (out / country / "eval" / "results.json").is_file()
    # Each country's vector was trained on that country's pairs only.
    spain = json.loads((out / "Spain" / "runs" / "caa" / "comparison_key.json").read_text())
    egypt = json.loads((out / "Egypt" / "runs" / "caa" / "comparison_key.json").read_text())
    assert spain["pairs"] != egypt["pairs"]

    merged = json.loads((out / "eval" / "results.json").read_text())
    names = [c["condition"]["name"] for c in merged["conditions"]]
    assert names == ["no steering", "yapo", "caa"]
    # The merged table's per-country rows are exactly each country's own evaluation.
    for country in ("Spain", "Egypt"):
        own = json.loads((out / country / "eval" / "results.json").read_text())
        for mine, theirs in zip(merged["conditions"], own["conditions"], strict=True):
            (whole,) = [
                row["metrics"]
                for row in mine["mcq"]["metrics"]["rows"]
                if row["level"] == "country" and row["country"] == country
            ]
            (alone,) = [
                row["metrics"]
                for row in theirs["mcq"]["metrics"]["rows"]
                if row["level"] == "overall"
            ]
            for metric in ("localized", "nonlocalized", "mixed"):
                assert whole[metric]["value"] == pytest.approx(alone[metric]["value"])
    predictions = (out / "eval" / "mcq_predictions.jsonl").read_text().splitlines()
    per_country = sum(
        len((out / c / "eval" / "mcq_predictions.jsonl").read_text().splitlines())
        for c in ("Spain", "Egypt")
    )
    assert len(predictions) == per_country
    assert result.layer == 1 and set(result.countries) == {"Spain", "Egypt"}
    report = result.report.read_text()
    assert "yapo · Spain" in report and "yapo · Egypt" in report  # one loss curve per country
    assert "| en | Spain |" in result.table and "| en | Egypt |" in result.table
    # The split is written out, and the held-out file is what was evaluated.
    from yapo.data.cultural import load_mcq

    held_out, _ = load_mcq(out / "Spain" / "test_items.jsonl")
    evaluated = {
        json.loads(line)["id"]
        for line in (out / "Spain" / "eval" / "mcq_predictions.jsonl").read_text().splitlines()
    }
    assert {item.id for item in held_out} == evaluated
    train_lines = (out / "Spain" / "train_pairs.jsonl").read_text().splitlines()
    assert len(train_lines) == result.countries["Spain"]["train_pairs"]
    summary = json.loads((out / "comparison.json").read_text())
    assert summary["countries"]["Spain"]["train_pairs"] > 0


def test_finished_runs_are_reused_only_with_the_same_settings(
    saved_model_dir: Path, tmp_path: Path
) -> None:
    sae_dir = tmp_path / "sae"
    make_sae("relu").save(sae_dir)
    items, _ = load_demo_mcq(countries=["Mexico"], languages=["en"])
    out = tmp_path / "cmp"
    settings = _settings(saved_model_dir, sae_dir, methods=("bipo", "sas"))
    run_comparison(items, out, settings, log=lambda _m: None)
    vector_file = out / "Mexico" / "runs" / "bipo" / "vector" / "vector.safetensors"
    first = vector_file.stat().st_mtime_ns

    messages: list[str] = []
    run_comparison(items, out, settings, log=messages.append)
    assert vector_file.stat().st_mtime_ns == first
    assert any("bipo already trained" in m for m in messages)
    assert json.loads((out / "Mexico" / "runs" / "bipo" / "comparison_key.json").read_text())[
        "finished"
    ]

    messages.clear()
    changed = _settings(saved_model_dir, sae_dir, methods=("bipo", "sas"), learning_rate=0.1)
    run_comparison(items, out, changed, log=messages.append)
    assert any("training bipo" in m for m in messages)  # the learning rate changed
    assert any("sas already trained" in m for m in messages)  # SAS does not use it


def test_an_interrupted_run_resumes_from_its_checkpoint_bit_identically(
    saved_model_dir: Path, tmp_path: Path
) -> None:
    import shutil

    from safetensors.torch import load_file

    sae_dir = tmp_path / "sae"
    make_sae("relu").save(sae_dir)
    items, _ = load_demo_mcq(countries=["Spain"], languages=["en"])
    out = tmp_path / "cmp"
    settings = _settings(saved_model_dir, sae_dir, methods=("bipo",), epochs=2)
    run_comparison(items, out, settings, log=lambda _m: None)
    run = out / "Spain" / "runs" / "bipo"
    finished = load_file(run / "vector" / "vector.safetensors")
    # Make it look killed during epoch 2: no vector, no last checkpoint, key unfinished.
    shutil.rmtree(run / "vector")
    first, last = sorted((run / "checkpoints").iterdir())
    shutil.rmtree(last)
    kept = {f: f.stat().st_mtime_ns for f in first.iterdir()}
    key = json.loads((run / "comparison_key.json").read_text())
    (run / "comparison_key.json").write_text(json.dumps({**key, "finished": False}))

    messages: list[str] = []
    run_comparison(items, out, settings, log=messages.append)
    assert any("resuming bipo" in m for m in messages)
    assert {f: f.stat().st_mtime_ns for f in first.iterdir()} == kept  # continued, not redone
    resumed = load_file(run / "vector" / "vector.safetensors")
    assert resumed.keys() == finished.keys()
    for name, tensor in finished.items():
        assert torch.equal(resumed[name], tensor), name
    assert json.loads((run / "comparison_key.json").read_text())["finished"] is True


def test_the_training_and_key_of_a_default_comparison_are_unchanged() -> None:
    """Pinned from the code before ``CompareConfig`` held a ``PreferenceConfig``.

    Then compare passed the trainer ``seed``, ``epochs`` and the settings it had set
    (6 epochs, patience 2) and keyed each run on exactly those; run folders trained
    then must still read as the same training and be reused.
    """
    from yapo.compare import _training_key
    from yapo.data.records import PreferencePair
    from yapo.demo import DemoConfig

    assert CompareConfig().training == PreferenceConfig(seed=0, epochs=6, early_stopping_patience=2)
    assert DemoConfig().training == CompareConfig().training
    assert DemoConfig.quick().training == PreferenceConfig(epochs=1, early_stopping_patience=2)
    pairs = [
        PreferencePair(prompt="Where?", chosen="Cairo", rejected="Paris", id="q1"),
        PreferencePair(prompt="Food?", chosen="koshari", rejected="pizza", id="q2"),
    ]
    validation = [PreferencePair(prompt="Drink?", chosen="tea", rejected="cola", id="q3")]
    digest = "f42d636c4ed753fb2f1911a0607e849ec773fec81b1284046142d4507679cc14"
    validation_digest = "dc54c7fe187c61cd149585ddfb52b904b1786d97ab8395f864547abbb1508dfd"
    for method in ("bipo", "bipo-reps"):
        assert _training_key(method, pairs, validation, 3, None, CompareConfig()) == {
            "layer": 3,
            "method": method,
            "model": "default",
            "pairs": digest,
            "training": {"early_stopping_patience": 2, "epochs": 6, "seed": 0},
            "validation_pairs": validation_digest,
        }
    assert _training_key("caa", pairs, validation, 3, None, CompareConfig()) == {
        "layer": 3,
        "method": "caa",
        "model": "default",
        "pairs": digest,
    }
    changed = CompareConfig(
        training=comparison_training(
            epochs=1,
            warmup_steps=1,
            learning_rate=0.1,
            batch_size=2,
            seed=3,
            early_stopping_patience=None,
        )
    )
    assert _training_key("bipo", pairs, validation, 3, None, changed)["training"] == {
        "seed": 3,
        "epochs": 1,
        "warmup_steps": 1,
        "learning_rate": 0.1,
        "batch_size": 2,
    }
    beta = CompareConfig(training=comparison_training(beta=0.5))  # any other setting counts
    assert _training_key("bipo", pairs, validation, 3, None, beta)["training"]["beta"] == 0.5


def test_bad_requests_say_what_the_data_has() -> None:
    items, _ = load_demo_mcq(countries=["Egypt", "Spain"], languages=["en", "es", "ar"])
    with pytest.raises(YapoError, match="no Atlantis; its countries: Egypt, Spain"):
        select_items(items, ["Atlantis"])
    with pytest.raises(YapoError, match="Egypt has no items in es; its languages: ar, en"):
        select_items(items, ["Egypt"], ["es"])
    assert {i.language for i in select_items(items, None, ["en"])["Spain"]} == {"en"}
    with pytest.raises(YapoError, match="unknown method"):
        CompareConfig(methods=("yapo", "magic")).validate()
    with pytest.raises(YapoError, match="test_fraction"):
        CompareConfig(test_fraction=1.0).validate()
    with pytest.raises(YapoError, match="epochs"):
        CompareConfig(training=comparison_training(epochs=0)).validate()
    with pytest.raises(YapoError, match="yapo-reps"):  # the objective is in the method name
        CompareConfig(training=comparison_training(objective="reps")).validate()
    assert country_folder_name("South Korea") == "South_Korea"


def test_compare_cli_refuses_an_unknown_country(tmp_path: Path) -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "yapo.cli.main",
            "compare",
            "--data",
            "demo",
            "--countries",
            "Atlantis",
            "--out",
            str(tmp_path / "x"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 2, done.stderr
    assert "no Atlantis; its countries: Egypt, Mexico, Morocco, Spain" in done.stderr
