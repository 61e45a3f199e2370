"""The demo pipeline end to end on a tiny model and a random SAE (the real one runs in CI)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from tests.conftest import make_sae

from yapo import YapoError
from yapo.compare import comparison_training
from yapo.demo import DemoConfig, run_demo


def test_demo_writes_runs_evaluation_and_report(saved_model_dir: Path, tmp_path: Path) -> None:
    sae_dir = tmp_path / "sae"
    make_sae("jumprelu").save(sae_dir)
    settings = DemoConfig.quick(
        model=str(saved_model_dir),
        sae=str(sae_dir),
        layer=1,
        max_questions=6,
        training=comparison_training(epochs=1),
    )
    messages: list[str] = []
    result = run_demo(tmp_path / "demo", settings, log=messages.append)
    out = tmp_path / "demo"
    for method in ("yapo", "bipo", "caa", "sas"):
        assert (out / "Egypt" / "runs" / method / "vector" / "vector.safetensors").is_file()
    results = json.loads((out / "eval" / "results.json").read_text())
    names = [c["condition"]["name"] for c in results["conditions"]]
    assert names[0] == "no steering" and set(names[1:]) == {"yapo", "bipo", "caa", "sas"}
    assert result.report.is_file() and "yapo" in result.report.read_text()
    summary = json.loads((out / "demo.json").read_text())
    assert summary["layer"] == 1 and summary["train_pairs"] > 0
    assert any("held-out" in m for m in messages)


def test_demo_refuses_bad_settings(tmp_path: Path) -> None:
    with pytest.raises(YapoError, match="unknown method"):
        run_demo(tmp_path, DemoConfig(methods=("yapo", "magic")))
    with pytest.raises(YapoError, match="has no Atlantis; its countries: Egypt"):
        run_demo(tmp_path, DemoConfig(country="Atlantis"))


def test_demo_cli_error_exit(tmp_path: Path) -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "yapo.cli.main",
            "demo",
            "--country",
            "Atlantis",
            "--out",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 2 and "has no Atlantis; its countries: Egypt" in done.stderr
