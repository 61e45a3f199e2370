"""The one rule for a folder that may hold a run (yapo.methods.reuse)."""

from __future__ import annotations

from typing import Any

from yapo.methods.reuse import Action, decide, differences, run_state


def _compare(saved: dict[str, Any] | None, now: dict[str, Any], finished: bool) -> Action:
    """The rule as ``yapo compare`` applies it (a resumable method, retrain on change)."""
    return decide(saved, now, finished=finished, resumable=True, on_change="train")


def test_same_inputs_reuse_or_resume_other_inputs_retrain_or_refuse() -> None:
    inputs = {"method": "bipo", "layer": 1, "betas": (0.9, 0.999)}
    saved = {"method": "bipo", "layer": 1, "betas": [0.9, 0.999]}  # as read back from JSON
    assert run_state(None, inputs, finished=False) == "new"
    assert run_state(saved, inputs, finished=True) == "finished"
    assert run_state(saved, inputs, finished=False) == "interrupted"
    assert run_state(saved, {**inputs, "layer": 2}, finished=True) == "changed"
    assert _compare(None, inputs, False) == "train"
    assert _compare(saved, inputs, True) == "reuse"
    assert _compare(saved, inputs, False) == "resume"
    changed = {**inputs, "layer": 2}
    assert _compare(saved, changed, True) == "train"
    assert decide(saved, changed, finished=True, resumable=True, on_change="refuse") == "refuse"
    # without checkpoints an interrupted run is trained again
    assert decide(saved, inputs, finished=False, resumable=False, on_change="train") == "train"
    assert differences(saved, changed) == ["layer: 1 then, 2 now"]
