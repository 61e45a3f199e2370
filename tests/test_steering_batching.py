"""Steered batches equal one-at-a-time runs; steered generation equals a manual loop."""

from __future__ import annotations

import pytest
import torch
from tests.conftest import HIDDEN, make_model, make_sae, make_tokenizer

from yapo import DenseVector, SparseVector, add_to_layer, generate
from yapo.vectors.base import SteeringVector

LAYER = 2
PROMPTS = ["w1 w2 w3 w4 w5 w6", "w9 w8", "w20 w21 w22 w23"]


def _vector(kind: str, model: torch.nn.Module) -> SteeringVector:
    g = torch.Generator().manual_seed(5)
    if kind == "dense":
        return DenseVector.create(torch.randn(HIDDEN, generator=g) * 3, model, LAYER)
    sae = make_sae("jumprelu", seed=2)
    return SparseVector.create(torch.randn(sae.d_sae, generator=g) * 2, model, LAYER, sae)


@pytest.mark.parametrize("kind", ["dense", "sparse"])
@pytest.mark.parametrize("side", ["left", "right"])
@pytest.mark.parametrize("arch", ["llama", "gemma3", "gpt2"])
def test_padded_batch_equals_one_at_a_time(kind: str, side: str, arch: str) -> None:
    model, tokenizer = make_model(arch), make_tokenizer()
    vector = _vector(kind, model)
    tokenizer.padding_side = side
    batch = tokenizer(PROMPTS, return_tensors="pt", padding=True)
    # Absolute-position models (GPT-2) need explicit positions under left padding.
    batch["position_ids"] = (batch["attention_mask"].cumsum(-1) - 1).clamp(min=0)
    with torch.no_grad(), vector.apply(model, multiplier=1.5, direction=-1):
        batched = model(**batch).logits
        for row, prompt in enumerate(PROMPTS):
            single = tokenizer(prompt, return_tensors="pt")
            alone = model(**single).logits[0]
            real = batch["attention_mask"][row].bool()
            torch.testing.assert_close(batched[row][real], alone, rtol=1e-4, atol=1e-5)


def _manual_greedy(
    model: torch.nn.Module, ids: torch.Tensor, vector: SteeringVector, steps: int, positions: str
) -> torch.Tensor:
    """Recompute the whole sequence every step (no cache), masking the delta by position."""
    prompt_length = ids.shape[1]
    for _ in range(steps):
        length = ids.shape[1]
        mask = torch.zeros(length, 1)
        if positions in ("all", "prompt"):
            mask[:prompt_length] = 1
        if positions in ("all", "generated"):
            mask[prompt_length:] = 1

        def delta(h: torch.Tensor, mask: torch.Tensor = mask) -> torch.Tensor:
            return vector.delta(h, 2.0, 1) * mask

        with torch.no_grad(), add_to_layer(model, vector.layer, delta):
            logits = model(ids).logits
        ids = torch.cat([ids, logits[:, -1].argmax(-1, keepdim=True)], dim=1)
    return ids[:, prompt_length:]


@pytest.mark.parametrize("kind", ["dense", "sparse"])
@pytest.mark.parametrize("positions", ["all", "prompt", "generated"])
def test_steered_generate_equals_manual_recomputation(kind: str, positions: str) -> None:
    model, tokenizer = make_model("llama", seed=3), make_tokenizer()
    vector = _vector(kind, model)
    prompt = "w5 w6 w7 w8"
    ids = tokenizer(prompt, return_tensors="pt")["input_ids"]
    expected = _manual_greedy(model, ids, vector, steps=6, positions=positions)
    with torch.no_grad(), vector.apply(model, multiplier=2.0, positions=positions):  # type: ignore[arg-type]
        out = model.generate(ids, max_new_tokens=6, do_sample=False, min_new_tokens=6)
    assert torch.equal(out[:, ids.shape[1] :], expected)
    text = generate(
        model,
        tokenizer,
        prompt,
        vector=vector,
        multiplier=2.0,
        positions=positions,  # type: ignore[arg-type]
        max_new_tokens=6,
    )
    assert text == tokenizer.batch_decode(expected, skip_special_tokens=True)


def test_positions_change_the_output() -> None:
    """Sanity check that the three position modes are not all the same thing."""
    model, tokenizer = make_model("llama", seed=3), make_tokenizer()
    vector = _vector("dense", model)
    ids = tokenizer("w5 w6 w7 w8", return_tensors="pt")["input_ids"]
    outs = {}
    for positions in ("all", "prompt", "generated"):
        outs[positions] = _manual_greedy(model, ids, vector, steps=6, positions=positions)
    plain = model.generate(ids, max_new_tokens=6, do_sample=False, min_new_tokens=6)
    assert len({tuple(o[0].tolist()) for o in outs.values()} | {tuple(plain[0, 5:].tolist())}) > 2


def test_batched_generate_with_left_padding_matches_single_prompts() -> None:
    model, tokenizer = make_model("gemma3", seed=4), make_tokenizer()
    vector = _vector("sparse", model)
    batched = generate(model, tokenizer, PROMPTS, vector=vector, multiplier=2.0, max_new_tokens=5)
    singles = [
        generate(model, tokenizer, p, vector=vector, multiplier=2.0, max_new_tokens=5)[0]
        for p in PROMPTS
    ]
    assert batched == singles
