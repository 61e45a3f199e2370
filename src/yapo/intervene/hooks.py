"""Every forward hook yapo puts on a decoder block: add, replace, record, stop.

The rule they share: yapo never wraps or replaces model modules for inference; it
registers a hook on block ``L`` and removes it in ``finally``, so an exception inside a
``with`` body cannot leave a model steered, patched or recording. Each hook reads the
block's output through :func:`yapo.intervene.outputs.split_output`, so it copes with
blocks that return a tensor or a tuple.

Order matters when several hooks sit on one block. Hooks that *edit* the output
(:func:`add_to_layer`, :func:`replace_state`) are registered first (``prepend``), before
the hooks transformers itself registers to record ``hidden_states``, so recorded states
show the edited stream. Hooks that *read* it (:func:`record_states`,
:func:`run_to_layer`) are registered last, so they see what the next block receives.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import Tensor, nn

from yapo.errors import YapoError
from yapo.intervene.outputs import Rest, rebuild_output, split_output
from yapo.intervene.positions import POSITIONS, Positions, PositionTracker
from yapo.models.layers import decoder_blocks, resolve_layer

DeltaFn = Callable[[Tensor], Tensor]


@contextlib.contextmanager
def add_to_layer(
    model: nn.Module, layer: int, delta_fn: DeltaFn, positions: Positions = "all"
) -> Iterator[None]:
    """Within the block, block ``layer`` outputs ``h + delta_fn(h)`` (masked by ``positions``).

    ``delta_fn`` receives the block's hidden states ``(batch, seq, d_model)`` and returns
    a tensor broadcastable to them, in their dtype and on their device. The delta depends
    only on each position's own state, so padded batches need no mask.
    """
    if positions not in POSITIONS:
        raise YapoError(f"positions must be one of {POSITIONS}, got {positions!r}")
    index = resolve_layer(model, layer)
    block = decoder_blocks(model)[index]
    tracker = PositionTracker(positions)

    def pre_hook(_module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        tracker.before_block(index, args, kwargs)

    def hook(_module: nn.Module, _args: Any, _kwargs: dict[str, Any], output: Any) -> Any:
        hidden, rest = split_output(output, "steer")
        if not tracker.should_steer():
            return output
        return rebuild_output(hidden + delta_fn(hidden), rest)

    handles = [
        block.register_forward_pre_hook(pre_hook, with_kwargs=True),
        block.register_forward_hook(hook, with_kwargs=True, prepend=True),
    ]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


@contextlib.contextmanager
def replace_state(
    model: nn.Module, layer: int, rows: Tensor, column: int, values: Tensor
) -> Iterator[None]:
    """While active, block ``layer`` outputs ``values[i]`` at ``(rows[i], column)``.

    A replacement, not an addition, so the patched state is bit-for-bit the source
    state (activation patching).
    """
    block = decoder_blocks(model)[resolve_layer(model, layer)]

    def hook(_module: nn.Module, _args: Any, output: Any) -> Any:
        hidden, rest = split_output(output, "patch")
        patched = hidden.clone()
        patched[rows.to(hidden.device), column] = values.to(
            device=hidden.device, dtype=hidden.dtype
        )
        return rebuild_output(patched, rest)

    handle = block.register_forward_hook(hook, prepend=True)
    try:
        yield
    finally:
        handle.remove()


@contextlib.contextmanager
def record_states(model: nn.Module, column: int) -> Iterator[list[Tensor]]:
    """Collect every decoder block's output at ``column`` (in block order), ``(rows, d)`` each.

    Read from the blocks themselves rather than ``output_hidden_states``, whose last
    entry Hugging Face models give *after* the final norm, not as block ``N-1``'s output.
    """
    blocks = decoder_blocks(model)
    recorded: list[Tensor] = [torch.empty(0)] * len(blocks)

    def make_hook(index: int) -> Callable[..., None]:
        def hook(_module: nn.Module, _args: Any, output: Any) -> None:
            recorded[index] = split_output(output)[0][:, column].detach()

        return hook

    handles = [block.register_forward_hook(make_hook(i)) for i, block in enumerate(blocks)]
    try:
        yield recorded
    finally:
        for handle in handles:
            handle.remove()


class _ReachedLayer(Exception):
    """Raised after block ``L`` has run, carrying its output: nothing above ``L`` is needed."""

    def __init__(self, output: Any) -> None:
        super().__init__("reached the requested layer")
        self.output = output


def run_to_layer(
    model: nn.Module, layer: int, runner: nn.Module | None = None, **inputs: Any
) -> tuple[Tensor, Rest]:
    """Block ``layer``'s output for ``(runner or model)(**inputs)``, without the blocks above.

    The forward is cut short by an exception raised from a hook on block ``layer``, so
    it works with every architecture's own loop and costs only blocks ``0..layer``.
    ``runner`` is the module to call when it is not ``model`` itself (the base model
    without its LM head). Runs without gradient; the states are detached. Returns the
    split output (:func:`yapo.intervene.outputs.split_output`).
    """
    index = resolve_layer(model, layer)
    block = decoder_blocks(model)[index]

    def stop(_module: nn.Module, _args: Any, output: Any) -> None:
        raise _ReachedLayer(output)

    handle = block.register_forward_hook(stop)
    try:
        with torch.no_grad():
            (model if runner is None else runner)(**inputs)
    except _ReachedLayer as reached:
        hidden, rest = split_output(reached.output)
        return hidden.detach(), rest
    finally:
        handle.remove()
    raise YapoError(f"block {index} of {type(model).__name__} never ran")
