"""Data-parallel training across processes (``accelerate launch``), reduced to what v needs.

The model is frozen and ``v`` is tiny, so every process holds the whole model, takes
its share of each global batch, and the only communication is one all-reduce of the
gradient of ``v`` (plus a few loss sums for the log). With every process using the
same global batch, the same direction ``d`` and the same clipped gradient, all copies
of ``v`` stay equal, and equal to what one process would compute.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass
class Processes:
    """This process's place among ``world`` processes."""

    rank: int = 0
    world: int = 1
    device: torch.device | None = None

    @property
    def main(self) -> bool:
        return self.rank == 0

    def share(self, items: list[int]) -> list[int]:
        """This process's part of a global batch (round-robin, so order is kept per rank)."""
        return items[self.rank :: self.world]

    def sum(self, tensor: Tensor) -> Tensor:
        """Sum ``tensor`` over all processes (in place; returned for convenience)."""
        if self.world > 1:
            torch.distributed.all_reduce(tensor, op=torch.distributed.ReduceOp.SUM)
        return tensor

    def barrier(self) -> None:
        if self.world > 1:
            torch.distributed.barrier()


def current_processes() -> Processes:
    """Read the launch environment; start the process group when there are several.

    Uses accelerate's ``PartialState`` (gloo on CPU, NCCL on GPUs), so a script run by
    ``accelerate launch --multi_gpu --num_processes N`` (or ``torchrun``) needs nothing
    else; without CUDA the processes run on CPU with gloo.
    """
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return Processes()
    from accelerate import PartialState

    # cpu=True without CUDA: gloo on CPU (accelerate's default would not start a group).
    state = PartialState(cpu=not torch.cuda.is_available())
    return Processes(state.process_index, state.num_processes, state.device)
