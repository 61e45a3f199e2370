"""Batched greedy generation over many prompts, optionally steered, with throughput.

:func:`yapo.generate` handles one batch of raw prompts; evaluation needs hundreds of
prompts that are often already rendered with a chat template (which carries its own
BOS), so this module tokenizes each prompt the same way :mod:`yapo.evaluate.scoring`
does (BOS added only when the text lacks it), sorts prompts by length to waste little
padding, left-pads each batch, and reports how many tokens were generated per second.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from yapo.errors import YapoError
from yapo.evaluate.scoring import Throughput, starts_with_bos
from yapo.intervene import input_device
from yapo.vectors.steer import UNSTEERED, Steer


def encode_prompt(tokenizer: Any, text: str) -> list[int]:
    """Token ids of ``text``, with BOS unless the text already starts with it."""
    return list(
        tokenizer(text, add_special_tokens=not starts_with_bos(tokenizer, text))["input_ids"]
    )


def generate_texts(
    model: nn.Module,
    tokenizer: Any,
    texts: Sequence[str],
    *,
    steer: Steer = UNSTEERED,
    max_new_tokens: int = 128,
    batch_size: int = 8,
) -> tuple[list[str], Throughput]:
    """Greedy continuations of ``texts`` under ``steer`` (special tokens removed), in input
    order."""
    if batch_size < 1:
        raise YapoError(f"batch_size must be at least 1, got {batch_size}")
    if max_new_tokens < 1:
        raise YapoError(f"max_new_tokens must be at least 1, got {max_new_tokens}")
    encoded = [encode_prompt(tokenizer, t) for t in texts]
    order = sorted(range(len(texts)), key=lambda i: len(encoded[i]), reverse=True)
    outputs = [""] * len(texts)
    stats = Throughput()
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    eos_ids = _eos_ids(model, tokenizer)
    device = input_device(model)
    start = time.perf_counter()
    with steer.apply(model), torch.no_grad():
        starts = range(0, len(order), batch_size)
        for begin in tqdm(starts, desc="generating", unit="batch", leave=False, disable=None):
            chunk = order[begin : begin + batch_size]
            length = max(len(encoded[i]) for i in chunk)
            ids = torch.full((len(chunk), length), int(pad_id), dtype=torch.long)
            mask = torch.zeros((len(chunk), length), dtype=torch.long)
            for row, i in enumerate(chunk):
                ids[row, length - len(encoded[i]) :] = torch.tensor(encoded[i])
                mask[row, length - len(encoded[i]) :] = 1
            generated = model.generate(  # type: ignore[operator]
                input_ids=ids.to(device),
                attention_mask=mask.to(device),
                max_new_tokens=max_new_tokens,
                do_sample=False,
                pad_token_id=int(pad_id),
            )
            new = generated[:, length:].cpu()
            for row, i in enumerate(chunk):
                tokens = _until_eos(new[row].tolist(), eos_ids)
                stats.tokens += len(tokens)
                outputs[i] = str(tokenizer.decode(tokens, skip_special_tokens=True))
            stats.sequences += len(chunk)
            stats.forward_passes += 1
    stats.seconds = time.perf_counter() - start
    return outputs, stats


def _eos_ids(model: nn.Module, tokenizer: Any) -> set[int]:
    ids: set[int] = set()
    config = getattr(model, "generation_config", None)
    for source in (getattr(config, "eos_token_id", None), tokenizer.eos_token_id):
        if isinstance(source, int):
            ids.add(source)
        elif isinstance(source, (list, tuple)):
            ids.update(int(x) for x in source)
    return ids


def _until_eos(tokens: list[int], eos_ids: set[int]) -> list[int]:
    for position, token in enumerate(tokens):
        if token in eos_ids:
            return tokens[:position]
    return tokens
