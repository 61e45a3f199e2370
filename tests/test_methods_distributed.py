"""Two CPU processes under ``accelerate launch`` (gloo) train the same vector as one process."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from tests.conftest import make_sae

from yapo.vectors import load_vector

WORKER = Path(__file__).with_name("methods_dist_worker.py")
ROOT = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK")}
    env["OMP_NUM_THREADS"] = "1"
    env["PYTHONPATH"] = f"{ROOT}{os.pathsep}{env.get('PYTHONPATH', '')}"
    return env


@pytest.mark.skipif(shutil.which("accelerate") is None, reason="accelerate CLI not installed")
def test_two_processes_match_one(tmp_path: Path) -> None:
    single = subprocess.run(
        [sys.executable, str(WORKER), str(tmp_path / "one")],
        env=_env(), capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert single.returncode == 0, single.stderr[-3000:]
    launch = [
        "accelerate", "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
        "--mixed_precision", "no", "--dynamo_backend", "no",
        "--main_process_port", str(_free_port()),
        str(WORKER), str(tmp_path / "two"),
    ]  # fmt: skip
    double = subprocess.run(
        launch, env=_env(), capture_output=True, text=True, timeout=300, check=False
    )
    assert double.returncode == 0, double.stderr[-3000:]
    for method in ("bipo", "yapo"):
        assert double.stdout.count(f"{method} steps=6") == 2  # both ranks finished
        _compare(tmp_path / "one" / method, tmp_path / "two" / method, method)


def _compare(one_dir: Path, two_dir: Path, method: str) -> None:
    config = json.loads((two_dir / "config.json").read_text())
    assert config["processes"] == 2
    sae = make_sae() if method == "yapo" else None
    one = load_vector(one_dir / "vector", sae=sae).vector
    two = load_vector(two_dir / "vector", sae=sae).vector
    assert float(one.norm()) > 0.1
    torch.testing.assert_close(two, one, atol=1e-6, rtol=1e-5)

    def losses(folder: Path) -> list[float]:
        lines = [json.loads(x) for x in (folder / "metrics.jsonl").read_text().splitlines()]
        return [r.get("loss", r.get("eval_loss")) for r in lines]

    assert losses(two_dir) == pytest.approx(losses(one_dir), abs=1e-6)
