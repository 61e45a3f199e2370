"""Worker for the data-parallel test: trains a tiny vector and (rank 0) saves it.

Run as ``python tests/methods_dist_worker.py OUT`` (one process) or under
``accelerate launch --multi_gpu --num_processes 2`` (two processes; gloo without CUDA).
Trains BiPO into ``OUT/bipo`` and YaPO into ``OUT/yapo``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.conftest import make_model, make_sae, make_tokenizer
from tests.methods_support import tiny_pairs

from yapo.methods import train


def main() -> None:
    torch.set_num_threads(1)
    for method in ("bipo", "yapo"):
        run(method, Path(sys.argv[1]) / method)


def run(method: str, out: Path) -> None:
    result = train(
        method,
        data=tiny_pairs(10),
        eval_data=tiny_pairs(4, seed=1),
        model=make_model("llama"),
        tokenizer=make_tokenizer(),
        layer=1,
        sae=make_sae() if method == "yapo" else None,
        out=out,
        epochs=2,
        batch_size=4,  # 10 pairs: steps of 4, 4 and 2 pairs (2 processes: 2+2, 2+2, 1+1)
        warmup_steps=1,
        learning_rate=0.05,
        lr_scale=1.0,
        progress=False,
    )
    print(f"{method} steps={result.steps} norm={float(result.vector.vector.norm()):.6f}")


if __name__ == "__main__":
    main()
