"""Running only blocks L+1..N from cached layer-L states equals the full forward."""

from __future__ import annotations

import pytest
import torch
from tests.conftest import ARCHITECTURES, LAYERS, VOCAB, make_model

from yapo.errors import YapoError
from yapo.intervene import LayerSplit, add_to_layer
from yapo.methods.logprobs import (
    ResponseIndex,
    check_split_exact,
    full_logprobs,
    split_logprobs,
)


def _batch(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Three right-padded rows with responses at different places."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(4, VOCAB, (3, 12), generator=g)
    attention = torch.ones_like(ids)
    attention[1, 9:] = 0
    attention[2, 7:] = 0
    response = torch.zeros_like(ids, dtype=torch.bool)
    response[0, 5:12] = True
    response[1, 4:9] = True
    response[2, 6:7] = True
    return ids, attention, response


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_split_equals_full_forward_at_every_layer(arch: str) -> None:
    model = make_model(arch)
    ids, attention, response = _batch()
    index = ResponseIndex.build(ids, response)
    with torch.no_grad():
        full = full_logprobs(model, ids, attention, response)
        hidden = model(input_ids=ids, attention_mask=attention, output_hidden_states=True)
    for layer in range(LAYERS):
        split = LayerSplit(model, layer)
        states = split.lower(ids, attention)
        if layer < LAYERS - 1:  # HF's last hidden state is after the final norm
            real = attention.bool()
            assert torch.equal(states[real], hidden.hidden_states[layer + 1][real])
        with torch.no_grad():
            fast = split_logprobs(split, states, attention, index)
        torch.testing.assert_close(fast, full, atol=1e-5, rtol=0)
    # the blocks are back in place after use
    with torch.no_grad():
        assert torch.equal(full_logprobs(model, ids, attention, response), full)


@pytest.mark.parametrize("arch", ["gemma2", "gemma3"])
def test_final_logit_softcapping_is_applied(arch: str) -> None:
    model = make_model(arch)
    model.config.final_logit_softcapping = 0.5  # strong: without it the numbers differ a lot
    ids, attention, response = _batch(1)
    split = LayerSplit(model, 1)
    assert split.softcap == 0.5
    assert check_split_exact(split, ids, attention, response) < 1e-5


@pytest.mark.parametrize("arch", ["llama", "gemma2", "gemma3", "qwen2", "gpt2"])
def test_steered_split_matches_hooked_forward_with_gradient(arch: str) -> None:
    """Adding a delta to the cached states = a hook at block L, in value and gradient."""
    model = make_model(arch)
    ids, attention, response = _batch(2)
    index = ResponseIndex.build(ids, response)
    layer = 1
    v1 = torch.zeros(model.config.get_text_config().hidden_size, requires_grad=True)
    v2 = torch.zeros_like(v1, requires_grad=True)
    with torch.no_grad():
        v1 += torch.randn(v1.shape, generator=torch.Generator().manual_seed(3)) * 0.3
        v2 += v1
    with add_to_layer(model, layer, lambda h: v1.to(h.dtype)):
        full = full_logprobs(model, ids, attention, response)
    split = LayerSplit(model, layer)
    states = split.lower(ids, attention)
    fast = split_logprobs(split, states + v2, attention, index)
    torch.testing.assert_close(fast, full, atol=1e-5, rtol=0)
    full.sum().backward()
    fast.sum().backward()
    assert v1.grad is not None and v2.grad is not None
    torch.testing.assert_close(v2.grad, v1.grad, atol=1e-5, rtol=1e-4)


def test_negative_layer_and_bad_layer() -> None:
    model = make_model("llama")
    assert LayerSplit(model, -1).layer == LAYERS - 1
    with pytest.raises(YapoError, match="out of range"):
        LayerSplit(model, LAYERS)


def test_check_split_exact_catches_a_wrong_split() -> None:
    model = make_model("llama")
    ids, attention, response = _batch()
    split = LayerSplit(model, 1)
    split.softcap = 0.1  # pretend the model soft-caps: the split now differs
    with pytest.raises(YapoError, match="--no-cache"):
        check_split_exact(split, ids, attention, response)


def test_response_index_rejects_response_at_position_zero() -> None:
    ids = torch.tensor([[5, 6, 7]])
    with pytest.raises(YapoError, match="position 0"):
        ResponseIndex.build(ids, torch.tensor([[True, True, False]]))
