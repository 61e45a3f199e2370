"""Text generation with or without a steering vector (the CLI's smoke path)."""

from __future__ import annotations

from typing import Any

import torch
from transformers import PreTrainedModel

from yapo.intervene import Positions
from yapo.vectors.base import SteeringVector
from yapo.vectors.steer import Steer


def generate(
    model: PreTrainedModel,
    tokenizer: Any,
    prompts: str | list[str],
    *,
    vector: SteeringVector | None = None,
    multiplier: float = 1.0,
    direction: int = 1,
    positions: Positions = "all",
    max_new_tokens: int = 64,
    do_sample: bool = False,
    temperature: float = 1.0,
    chat: bool = False,
    seed: int | None = None,
) -> list[str]:
    """Generate continuations for one or more prompts, left-padded in one batch.

    ``chat=True`` wraps each prompt in the tokenizer's chat template (for instruction-
    tuned models). Greedy by default so that steered and unsteered runs are comparable.
    """
    steer = Steer(vector, multiplier, direction, positions)
    texts = [prompts] if isinstance(prompts, str) else list(prompts)
    if chat and getattr(tokenizer, "chat_template", None):
        texts = [
            tokenizer.apply_chat_template(
                [{"role": "user", "content": t}], tokenize=False, add_generation_prompt=True
            )
            for t in texts
        ]
    previous_side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    try:
        batch = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=not chat)
    finally:
        tokenizer.padding_side = previous_side
    device = next(model.parameters()).device
    batch = {k: v.to(device) for k, v in batch.items()}
    if seed is not None:
        torch.manual_seed(seed)
    sampling: dict[str, Any] = {"do_sample": do_sample}
    if do_sample:
        sampling["temperature"] = temperature
    with steer.apply(model), torch.no_grad():
        output = model.generate(  # type: ignore[operator]
            **batch,
            max_new_tokens=max_new_tokens,
            pad_token_id=tokenizer.pad_token_id,
            **sampling,
        )
    new_tokens = output[:, batch["input_ids"].shape[1] :]
    return [str(t) for t in tokenizer.batch_decode(new_tokens, skip_special_tokens=True)]
