"""Nothing silently wrong (issue 13) with real processes and real HTTP servers.

* case 3: a training process is killed with ``kill -9`` while a second process tries
  to resume or overwrite its folder (refused: the folder is locked by a live process);
  after the kill the lock is stale, and ``--resume`` finishes the run bit-identically;
* case 9: judges against a server on 127.0.0.1 that hangs (the timeout and the
  deadline bound the cost) and one that answers HTTP 500 (every judgement failed: a
  non-zero exit; some failed: exit code 3 unless tolerated).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import torch
from tests.conftest import make_model
from tests.methods_support import tiny_pairs, write_jsonl
from tests.test_eval_support import GOOD, make_eval_tokenizer, make_open_questions
from typer.testing import CliRunner

from yapo.cli.main import app
from yapo.evaluate.judge import JudgeFailed, JudgeRequest, OpenAIJudge

ROOT = Path(__file__).resolve().parents[1]
# The first process holds after step 6 (past the checkpoint of step 5) for as long as
# ``hold`` exists, so it is alive for the whole check however slowly the refused
# processes start on a loaded machine (no timing assumptions).
DRIVER = """
import os, sys, time, torch
torch.set_num_threads(1)
from yapo.methods import train
data, model, out, hold, resume = sys.argv[1:6]
def wait(record):
    while hold and record["step"] >= 6 and os.path.exists(hold):
        time.sleep(0.05)
train("bipo", data=data, model=model, layer=1, out=out, epochs=30, warmup_steps=1,
      checkpoint_every=5, progress=False, resume=resume == "1", callbacks=[wait])
"""


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}


def _wait_for(condition: Callable[[], bool], seconds: float) -> None:
    ends = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > ends:
            raise AssertionError("timed out waiting")
        time.sleep(0.1)


def _lines(path: Path) -> int:
    return len(path.read_text().splitlines()) if path.is_file() else 0


# ----------------------------------------------------------------------------- case 3
def test_3_one_process_per_run_folder_and_kill_9_leaves_a_stale_lock(
    tmp_path: Path, saved_model_dir: Path
) -> None:
    data = write_jsonl(tmp_path / "pairs.jsonl", tiny_pairs(8))
    out = tmp_path / "run"
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER)

    hold = tmp_path / "hold"
    hold.touch()

    def launch(hold: str, resume: bool) -> subprocess.Popen[str]:
        args = [str(data), str(saved_model_dir), str(out), hold, "1" if resume else "0"]
        return subprocess.Popen(
            [sys.executable, str(driver), *args],
            env=_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    first = launch(str(hold), resume=False)  # holds after step 6 while `hold` exists
    try:
        _wait_for(lambda: _lines(out / "metrics.jsonl") >= 6, 120)
        cli = [sys.executable, "-m", "yapo.cli.main", "train", "--method", "bipo",
               "--model", str(saved_model_dir), "--layer", "1", "--data", str(data),
               "--out", str(out), "--epochs", "30", "--no-progress"]  # fmt: skip
        others = [
            subprocess.Popen(
                [*cli, extra], env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
            )
            for extra in ("--resume", "--overwrite")
        ]
        for second in others:
            _, stderr = second.communicate(timeout=180)
            assert second.returncode == 2, stderr
            assert f"is in use by process {first.pid}" in stderr
            assert "Traceback" not in stderr
        assert first.poll() is None  # untouched by the refused ones
        steps_before = _lines(out / "metrics.jsonl")
        os.kill(first.pid, signal.SIGKILL)
        first.wait(timeout=30)
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
    assert steps_before >= 3 and not (out / "vector").exists()
    resumed = launch("", resume=True)  # the dead process's lock is stale: accepted
    _, err = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, err
    config = json.loads((out / "config.json").read_text())
    assert config["finished"] is True and config["steps"] == 60

    from yapo.methods import train
    from yapo.vectors import load_vector

    torch.set_num_threads(1)
    whole = train(
        "bipo",
        data=str(data),
        model=str(saved_model_dir),
        layer=1,
        out=tmp_path / "whole",
        epochs=30,
        warmup_steps=1,
        checkpoint_every=5,
        progress=False,
    )
    assert torch.equal(load_vector(out / "vector").vector, whole.vector.vector)


# ----------------------------------------------------------------------------- case 9
@contextlib.contextmanager
def _serve(reply: Callable[[int], tuple[int, str] | None]) -> Iterator[str]:
    """A real server on 127.0.0.1; ``reply(call)`` gives (status, body), None = hang."""
    release = threading.Event()
    calls = [0]
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            with lock:
                calls[0] += 1
                call = calls[0]
            answer = reply(call)
            if answer is None:
                release.wait(60)  # hang until the test ends
                return
            status, body = answer
            data = body.encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: Any) -> None:
            return None

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/v1"
    finally:
        release.set()
        httpd.shutdown()
        httpd.server_close()


def _completion() -> str:
    message = {"role": "assistant", "content": json.dumps(GOOD)}
    choice = {"index": 0, "message": message, "finish_reason": "stop"}
    body = {"id": "x", "object": "chat.completion", "created": 0, "model": "j"}
    return json.dumps({**body, "choices": [choice]})


ERROR_500 = (500, '{"error": {"message": "down"}}')


def _requests(n: int) -> list[JudgeRequest]:
    return [JudgeRequest(f"k{i}", "w1", f"w{i}", "w3", "Spain", "es") for i in range(n)]


def test_9_a_hung_judge_is_bounded_by_the_timeout_and_the_deadline() -> None:
    with _serve(lambda call: None) as url:
        judge = OpenAIJudge("j", url, timeout=0.5, max_retries=3, backoff=0.0, concurrency=2)
        started = time.monotonic()
        (one,) = judge.judge(_requests(1))
        assert time.monotonic() - started < 4.0  # 4 attempts × 0.5 s, not 4 × 120 s
        assert not one.ok and one.attempts == 4 and "Timeout" in (one.error or "")

        judge = OpenAIJudge(
            "j", url, timeout=0.5, max_retries=3, backoff=0.0, concurrency=2, deadline=1.2
        )
        started = time.monotonic()
        judgements = judge.judge(_requests(8))  # 8 × 4 × 0.5 / 2 = 8 s without a deadline
        assert time.monotonic() - started < 3.0
        assert not any(j.ok for j in judgements)
        assert any("deadline of 1.2s passed" in (j.error or "") for j in judgements)


@pytest.fixture
def eval_setup(tmp_path: Path) -> dict[str, Path]:
    model_dir = tmp_path / "model"
    make_model("llama").save_pretrained(model_dir)
    make_eval_tokenizer().save_pretrained(model_dir)
    open_path = tmp_path / "open.jsonl"
    open_path.write_text("".join(json.dumps(q.to_json()) + "\n" for q in make_open_questions()))
    return {"model": model_dir, "open": open_path, "root": tmp_path}


def _eval_args(setup: dict[str, Path], url: str, out: str) -> list[str]:
    return [
        "eval", "--model", str(setup["model"]), "--open-data", str(setup["open"]),
        "--judge-url", url, "--judge-model", "j", "--judge-retries", "0",
        "--no-judge-cache", "--max-new-tokens", "2", "--bootstrap", "0",
        "--out", str(setup["root"] / out),
    ]  # fmt: skip


def test_9_every_judgement_failing_is_an_error_and_some_failing_exit_3(
    eval_setup: dict[str, Path],
) -> None:
    with _serve(lambda call: ERROR_500) as url:
        result = CliRunner().invoke(app, _eval_args(eval_setup, url, "all"))
        assert isinstance(result.exception, JudgeFailed)
        assert "every one of the 6 judgement(s) failed" in str(result.exception)
        assert (eval_setup["root"] / "all" / "results.json").is_file()  # nothing lost
        real = subprocess.run(
            [sys.executable, "-m", "yapo.cli.main", *_eval_args(eval_setup, url, "real")],
            env=_env(),
            capture_output=True,
            text=True,
            timeout=180,
        )
        assert real.returncode == 2 and "every one of the 6" in real.stderr
        assert "Traceback" not in real.stderr

    with _serve(lambda call: ERROR_500 if call % 2 else (200, _completion())) as url:
        result = CliRunner().invoke(app, _eval_args(eval_setup, url, "some"))
        assert result.exit_code == 3, result.output
        assert "judge: 3 of 6 judgement(s) failed" in result.output
        tolerated = [*_eval_args(eval_setup, url, "tolerated"), "--judge-max-failures", "3"]
        result = CliRunner().invoke(app, tolerated)
        assert result.exit_code == 0 and "judge: 3 of 6 judgement(s) failed" in result.output
