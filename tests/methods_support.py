"""Tiny preference tasks for the trainer tests (words of the conftest tokenizer)."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import torch

from yapo.data.records import PreferencePair


def tiny_pairs(n: int = 12, seed: int = 0) -> list[PreferencePair]:
    """Prompts of random words; chosen answers start ``w70 w71``, rejected ``w90 w91``.

    The two answer styles differ in the same way everywhere, so a steering vector can
    learn to prefer one.
    """
    rng = random.Random(seed)

    def words(k: int) -> str:
        return " ".join(f"w{rng.randrange(4, 60)}" for _ in range(k))

    return [
        PreferencePair(
            prompt=words(rng.randrange(3, 9)),
            chosen=f"w70 w71 {words(rng.randrange(1, 3))}",
            rejected=f"w90 w91 {words(rng.randrange(1, 4))}",
            id=f"p{i}",
        )
        for i in range(n)
    ]


def write_jsonl(path: Path, pairs: list[PreferencePair]) -> Path:
    path.write_text(
        "".join(
            json.dumps({"prompt": p.prompt, "chosen": p.chosen, "rejected": p.rejected}) + "\n"
            for p in pairs
        ),
        encoding="utf-8",
    )
    return path


def steerable_model(arch: str = "llama") -> Any:
    """A conftest tiny model whose LM head is scaled up ×30.

    Randomly initialised heads (std 0.02) give near-uniform next-token distributions that
    no steering can move much; a larger head makes the tiny task learnable.
    """
    from tests.conftest import make_model

    model = make_model(arch)
    with torch.no_grad():
        model.get_output_embeddings().weight.mul_(30.0)
    return model
