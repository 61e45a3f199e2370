"""The layer that touches the model: block outputs, devices, and every hook."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from tests.conftest import ARCHITECTURES, LAYERS, VOCAB, make_model
from torch import nn

from yapo import YapoError, decoder_blocks
from yapo.intervene import (
    add_to_layer,
    cache_argument,
    input_device,
    rebuild_output,
    record_states,
    replace_state,
    run_to_layer,
    split_output,
    supports_logits_to_keep,
)


def _ids(seed: int = 0) -> torch.Tensor:
    return torch.randint(3, VOCAB, (2, 7), generator=torch.Generator().manual_seed(seed))


def _count_block_calls(model: nn.Module) -> tuple[list[int], list[bool], list[Any]]:
    """Per-block call counters, whether each block returned a tuple, and the hook handles.

    Registered before the hook under test, so they run first on a shared block.
    """
    calls = [0] * LAYERS
    tuples = [False] * LAYERS

    def make(index: int) -> Any:
        def hook(_module: nn.Module, _args: Any, output: Any) -> None:
            calls[index] += 1
            tuples[index] = isinstance(output, tuple)

        return hook

    handles = [b.register_forward_hook(make(i)) for i, b in enumerate(decoder_blocks(model))]
    return calls, tuples, handles


def _hooks(model: nn.Module) -> list[list[int]]:
    """The ids of the forward hooks on each block (to check that ours are removed)."""
    return [list(b._forward_hooks) for b in decoder_blocks(model)]


# ---------------------------------------------------------------- outputs
def test_split_and_rebuild_round_trip_both_layouts() -> None:
    hidden = torch.randn(2, 3, 4)
    extra = torch.randn(1)
    assert split_output(hidden) == (hidden, None)
    assert rebuild_output(hidden, None) is hidden
    got, rest = split_output((hidden, extra, None))
    assert got is hidden and rest == (extra, None)
    rebuilt = rebuild_output(hidden, rest)
    assert isinstance(rebuilt, tuple) and rebuilt[0] is hidden and rebuilt[1:] == (extra, None)
    assert rebuild_output(hidden, ()) == (hidden,)


@pytest.mark.parametrize("bad", [None, (), ("text",), [torch.zeros(1)]])
def test_split_output_refuses_what_is_not_hidden_states(bad: Any) -> None:
    with pytest.raises(YapoError, match="cannot patch a block whose output is"):
        split_output(bad, "patch")


# ---------------------------------------------------------------- devices
def test_devices_and_forward_signature() -> None:
    model = make_model("llama")
    assert input_device(model) == model.get_input_embeddings().weight.device
    assert supports_logits_to_keep(model)
    assert cache_argument(model) in ("cache", "past_key_values")
    plain = nn.Linear(2, 2)
    assert input_device(plain) == plain.weight.device
    assert not supports_logits_to_keep(plain)
    assert cache_argument(plain) == "past_key_values"


# -------------------------------------------------------- capture and stop
@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_run_to_layer_is_hidden_states_and_runs_nothing_above(arch: str) -> None:
    model = make_model(arch)
    ids = _ids()
    with torch.no_grad():
        full = model(input_ids=ids, output_hidden_states=True).hidden_states
    for layer in range(LAYERS - 1):  # HF's last entry is after the final norm
        calls, tuples, handles = _count_block_calls(model)
        try:
            hidden, rest = run_to_layer(model, layer, input_ids=ids, use_cache=False)
        finally:
            for handle in handles:
                handle.remove()
        assert calls == [1] * (layer + 1) + [0] * (LAYERS - layer - 1)
        assert torch.equal(hidden, full[layer + 1])
        assert not hidden.requires_grad
        assert tuples[layer] == (rest is not None)
    # the stop hook is gone: a full forward runs every block again
    calls, _, handles = _count_block_calls(model)
    with torch.no_grad():
        model(input_ids=ids)
    for handle in handles:
        handle.remove()
    assert calls == [1] * LAYERS


def test_run_to_layer_reads_the_block_output_after_edits() -> None:
    """The stop hook runs last on the block, so it captures the steered stream."""
    model = make_model("llama")
    ids = _ids(1)
    plain, _ = run_to_layer(model, 1, input_ids=ids)
    delta = torch.arange(plain.shape[-1], dtype=plain.dtype)
    with add_to_layer(model, 1, lambda h: delta):
        steered, _ = run_to_layer(model, 1, input_ids=ids)
    assert torch.equal(steered, plain + delta)


def test_run_to_layer_through_the_base_model_and_a_runner_that_skips_the_block() -> None:
    model = make_model("qwen2")
    ids = _ids(2)
    via_model, _ = run_to_layer(model, -2, input_ids=ids)
    via_base, _ = run_to_layer(model, LAYERS - 2, model.base_model, input_ids=ids)
    assert torch.equal(via_model, via_base)

    class Idle(nn.Module):
        def forward(self, **_inputs: Any) -> None:
            return None

    with pytest.raises(YapoError, match=f"block 1 of {type(model).__name__} never ran"):
        run_to_layer(model, 1, Idle(), input_ids=ids)
    assert _hooks(model) == [[]] * LAYERS


# --------------------------------------------------------- replace / record
@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_replace_state_writes_exact_values_and_record_sees_them(arch: str) -> None:
    model = make_model(arch)
    ids = _ids(3)
    values = torch.randn(1, model.config.get_text_config().hidden_size)
    with torch.no_grad():
        full = model(input_ids=ids, output_hidden_states=True).hidden_states
        before = _hooks(model)  # transformers keeps its own capture hook from here on
        with record_states(model, 4) as recorded:
            model(input_ids=ids)
        plain = [r.clone() for r in recorded]
        with (
            replace_state(model, 1, torch.tensor([1]), 4, values),
            record_states(model, 4) as recorded,
        ):
            model(input_ids=ids)
    for layer in range(LAYERS - 1):
        assert torch.equal(plain[layer], full[layer + 1][:, 4])
    assert torch.equal(recorded[0], plain[0])
    assert torch.equal(recorded[1][1], values[0])  # the patched row, bit for bit
    assert torch.equal(recorded[1][0], plain[1][0])  # the other row untouched
    assert not torch.equal(recorded[2][1], plain[2][1])  # and the blocks above saw it
    assert torch.equal(recorded[2][0], plain[2][0])
    assert _hooks(model) == before
