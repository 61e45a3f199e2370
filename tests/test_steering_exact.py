"""Steering edits exactly the hidden state it should, for every supported architecture."""

from __future__ import annotations

import pytest
import torch
from tests.conftest import ARCHITECTURES, HIDDEN, LAYERS, make_model, make_sae

from yapo import DenseVector, SparseVector, decoder_blocks
from yapo.vectors import sparse_delta_reference

LAYER = 1


def _hidden_states(model: torch.nn.Module, ids: torch.Tensor) -> tuple[torch.Tensor, ...]:
    with torch.no_grad():
        return tuple(model(ids, output_hidden_states=True).hidden_states)


def _vectors(model: torch.nn.Module) -> list[DenseVector | SparseVector]:
    g = torch.Generator().manual_seed(1)
    dense = DenseVector.create(torch.randn(HIDDEN, generator=g), model, LAYER, method="bipo")
    sae = make_sae("jumprelu")
    raw = torch.randn(sae.d_sae, generator=g)
    sparse = SparseVector.create(raw, model, LAYER, sae, method="yapo")
    return [dense, sparse]


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_layer_output_gets_exactly_the_delta(arch: str) -> None:
    model = make_model(arch)
    ids = torch.randint(3, 100, (2, 7))
    base = _hidden_states(model, ids)
    for vector in _vectors(model):
        for multiplier, direction in [(2.0, 1), (0.5, -1)]:
            with vector.apply(model, multiplier=multiplier, direction=direction):
                steered = _hidden_states(model, ids)
            for layer in range(LAYER + 1):  # embeddings and blocks 0..L-1 untouched
                assert torch.equal(steered[layer], base[layer]), (arch, layer)
            expected = base[LAYER + 1] + vector.delta(base[LAYER + 1], multiplier, direction)
            torch.testing.assert_close(steered[LAYER + 1], expected, rtol=1e-5, atol=1e-6)
            assert not torch.allclose(steered[LAYER + 2], base[LAYER + 2])


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_hooks_are_removed_on_exit_and_on_error(arch: str) -> None:
    model = make_model(arch)
    ids = torch.randint(3, 100, (1, 5))
    base = _hidden_states(model, ids)
    block = decoder_blocks(model)[LAYER]
    vector = _vectors(model)[0]

    def hooks() -> tuple[set[int], set[int]]:  # transformers adds hooks of its own
        return set(block._forward_hooks), set(block._forward_pre_hooks)

    before = hooks()
    with vector.apply(model, multiplier=3.0):
        during = hooks()
        assert during[0] > before[0] and during[1] > before[1]
    assert hooks() == before
    with pytest.raises(RuntimeError, match="boom"), vector.apply(model, multiplier=3.0):
        raise RuntimeError("boom")
    assert hooks() == before
    after = _hidden_states(model, ids)
    assert all(torch.equal(a, b) for a, b in zip(after, base))


def test_negative_layer_counts_from_the_end() -> None:
    model = make_model("llama")
    vector = DenseVector.create(torch.ones(HIDDEN), model, -1)
    assert vector.layer == LAYERS - 1


@pytest.mark.parametrize("activation", ["jumprelu", "relu", "topk"])
@pytest.mark.parametrize("direction", [1, -1])
@pytest.mark.parametrize("multiplier", [0.3, 1.0, 4.0])
def test_sparse_fast_form_equals_equation_3(
    activation: str, direction: int, multiplier: float
) -> None:
    model = make_model("llama")
    sae = make_sae(activation, seed=3)
    g = torch.Generator().manual_seed(7)
    raw = torch.randn(sae.d_sae, generator=g)
    raw[torch.rand(sae.d_sae, generator=g) < 0.5] = 0.0  # sparse, mixed signs
    vector = SparseVector.create(raw, model, LAYER, sae)
    hidden = torch.randn(3, 6, HIDDEN, generator=g) * 2
    fast = vector.delta(hidden, multiplier, direction)
    u = direction * multiplier * vector.vector
    # Eq. 3 written out: h' = Dec(ReLU(Enc(h) + u)) + (h - Dec(Enc(h)))
    steered = sae.decode(torch.relu(sae.encode(hidden) + u)) + (hidden - sae(hidden))
    oracle = steered - hidden
    scale = oracle.abs().max()
    assert scale > 0
    assert float((fast - oracle).abs().max() / scale) < 1e-5
    reference = vector.with_form("reference").delta(hidden, multiplier, direction)
    torch.testing.assert_close(reference, sparse_delta_reference(sae, hidden, u))


def test_sparse_fast_form_encodes_only_negative_latents() -> None:
    """With a non-negative u the delta is one constant vector: no encoder call at all."""
    model = make_model("llama")
    sae = make_sae("jumprelu")
    vector = SparseVector.create(torch.rand(sae.d_sae), model, LAYER, sae)
    calls: list[int] = []
    original = sae.encode_latents

    def counting(x: torch.Tensor, latents: torch.Tensor) -> torch.Tensor:
        calls.append(int(latents.numel()))
        return original(x, latents)

    sae.encode_latents = counting  # type: ignore[method-assign]
    hidden = torch.randn(2, 3, HIDDEN)
    delta = vector.delta(hidden, 1.0, 1)
    assert calls == []
    torch.testing.assert_close(
        delta.expand_as(hidden), sparse_delta_reference(sae, hidden, vector.vector)
    )
    vector.delta(hidden, 1.0, -1)
    assert calls == [sae.d_sae]  # every entry of u is negative now


def test_steering_in_half_precision_keeps_sae_maths_in_float32() -> None:
    model = make_model("llama").to(torch.bfloat16)
    sae = make_sae("jumprelu")
    vector = SparseVector.create(torch.randn(sae.d_sae), model, LAYER, sae)
    ids = torch.randint(3, 100, (1, 5))
    base = _hidden_states(model, ids)
    with vector.apply(model, multiplier=1.0):
        steered = _hidden_states(model, ids)
    assert steered[LAYER + 1].dtype == torch.bfloat16
    expected = base[LAYER + 1] + vector.delta(base[LAYER + 1], 1.0, 1)
    assert sae.W_enc.dtype == torch.float32
    torch.testing.assert_close(steered[LAYER + 1], expected)
