"""One rule for a folder that may already hold a run: reuse it, resume it, or train afresh.

A run's inputs (method, model, layer, SAE checksum, data hashes, every setting that
shapes the vector) are recorded when it starts. Later, with the inputs of a new
request:

* no run there                     -> train;
* other inputs                     -> retrain (``yapo compare``) or refuse (``--resume``):
                                      its vector means something else;
* same inputs, finished            -> reuse its vector;
* same inputs, interrupted         -> resume from its newest checkpoint (a method without
                                      checkpoints — CAA, SAS — is simply trained again).

:meth:`yapo.methods.runs.RunFolder.start` (``--resume``) and ``yapo compare`` both ask
:func:`decide`, so "the same inputs" means one thing everywhere.
"""

from __future__ import annotations

import json
from typing import Any, Literal

RunState = Literal["new", "changed", "finished", "interrupted"]
Action = Literal["train", "reuse", "resume", "refuse"]


def differences(saved: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """Each input that differs, as ``"key: then, now"`` (compared as saved: JSON values)."""
    current_json = json.loads(json.dumps(current))  # tuples -> lists, as saved
    keys = sorted(set(saved) | set(current_json))
    return [
        f"{k}: {saved.get(k)!r} then, {current_json.get(k)!r} now"
        for k in keys
        if saved.get(k) != current_json.get(k)
    ]


def run_state(saved: dict[str, Any] | None, current: dict[str, Any], finished: bool) -> RunState:
    """What the folder holds, judged against the inputs of this request."""
    if saved is None:
        return "new"
    if differences(saved, current):
        return "changed"
    return "finished" if finished else "interrupted"


def decide(
    saved: dict[str, Any] | None,
    current: dict[str, Any],
    *,
    finished: bool,
    resumable: bool,
    on_change: Literal["train", "refuse"],
) -> Action:
    """The one rule (module docstring): what to do with the run recorded as ``saved``."""
    state = run_state(saved, current, finished)
    if state == "new":
        return "train"
    if state == "changed":
        return on_change
    if state == "finished":
        return "reuse"
    return "resume" if resumable else "train"
