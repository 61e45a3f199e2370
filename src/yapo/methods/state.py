"""Trainer state to and from a :class:`Checkpoint`, exactly (for bit-identical resume).

What is saved: the vector, the optimizer's tensors and settings, the scheduler, the
step counter, and the random states of torch (CPU and CUDA), Python's ``random`` and
NumPy. The data order and the direction ``d`` of each step are functions of
``(seed, epoch)`` and ``(seed, step)``, so the step counter is the data position.
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch
from torch import Tensor

from yapo.errors import YapoError
from yapo.methods.runs import Checkpoint


def capture(
    step: int,
    vector: Tensor,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    extra: dict[str, Any] | None = None,
) -> Checkpoint:
    """Snapshot everything a resumed run needs to continue bit-identically."""
    tensors: dict[str, Tensor] = {"vector": vector.detach().clone()}
    optim = optimizer.state_dict()
    scalars: dict[str, Any] = {}
    for pid, state in optim["state"].items():
        for key, value in state.items():
            if isinstance(value, Tensor):
                tensors[f"optimizer.{pid}.{key}"] = value.detach().clone()
            else:
                scalars[f"{pid}.{key}"] = value
    tensors["rng.torch"] = torch.get_rng_state()
    if torch.cuda.is_available():
        for i, cuda_state in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng.cuda.{i}"] = cuda_state
    np_state: Any = np.random.get_state()
    tensors["rng.numpy.keys"] = torch.from_numpy(np.asarray(np_state[1], dtype=np.int64))
    py_version, py_state, py_gauss = random.getstate()
    info = {
        "step": step,
        "optimizer": {"param_groups": optim["param_groups"], "scalars": scalars},
        "scheduler": scheduler.state_dict(),
        "rng": {
            "python": [py_version, list(py_state), py_gauss],
            "numpy": [np_state[0], int(np_state[2]), int(np_state[3]), float(np_state[4])],
        },
        **(extra or {}),
    }
    return Checkpoint(tensors, info)


def restore(
    checkpoint: Checkpoint, vector: Tensor, optimizer: torch.optim.Optimizer, scheduler: Any
) -> None:
    """Put a snapshot back (the vector in place, optimizer, scheduler, random states)."""
    tensors, info = checkpoint.tensors, checkpoint.info
    saved = tensors.get("vector")
    if saved is None or saved.shape != vector.shape:
        raise YapoError(
            f"checkpoint vector has shape {None if saved is None else tuple(saved.shape)}, "
            f"this run's is {tuple(vector.shape)}"
        )
    with torch.no_grad():
        vector.copy_(saved.to(vector.device, vector.dtype))
    state: dict[int, dict[str, Any]] = {}
    for name, value in tensors.items():
        if name.startswith("optimizer."):
            _, pid, key = name.split(".", 2)
            state.setdefault(int(pid), {})[key] = value.to(vector.device)
    for name, value in info["optimizer"]["scalars"].items():
        pid, key = name.split(".", 1)
        state.setdefault(int(pid), {})[key] = value
    optimizer.load_state_dict({"state": state, "param_groups": info["optimizer"]["param_groups"]})
    scheduler.load_state_dict(info["scheduler"])
    torch.set_rng_state(tensors["rng.torch"])
    cuda_states = [tensors[k] for k in sorted(tensors) if k.startswith("rng.cuda.")]
    if cuda_states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda_states)
    py = info["rng"]["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    kind, pos, has_gauss, cached = info["rng"]["numpy"]
    keys = tensors["rng.numpy.keys"].numpy().astype(np.uint32)
    np.random.set_state((kind, keys, pos, has_gauss, cached))
