"""Add a delta to the output of one decoder block, for as long as a ``with`` block lasts.

Steering never wraps or replaces model modules: it registers a forward hook on block
``L`` and removes it in ``finally``, so an exception inside the ``with`` body cannot
leave a model steered. The hook copes with blocks that return a tensor or a tuple,
with padded batches (the delta depends only on each position's own state), and with
generation: ``positions`` picks whether prompt tokens, generated tokens or both are
steered.

How prompt and generated positions are told apart: a forward call whose key/value
cache is empty (or that has no cache and more than one token) starts a new sequence,
and all its positions are prompt positions; a call that continues a non-empty cache
is a generation step, and its positions are generated. Generation without a cache
(``use_cache=False``) re-feeds the whole sequence, which then counts as prompt.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any, Literal

from torch import Tensor, nn

from yapo.errors import YapoError
from yapo.models.layers import decoder_blocks, resolve_layer

Positions = Literal["all", "prompt", "generated"]
POSITIONS: tuple[Positions, ...] = ("all", "prompt", "generated")
DeltaFn = Callable[[Tensor], Tensor]


class _PositionTracker:
    """Decides, per forward call, whether its positions are prompt or generated."""

    def __init__(self, positions: Positions) -> None:
        self.positions = positions
        self.continues_cache = False

    def before_block(self, layer_index: int, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        """Read the cache length *before* the block appends this call's keys."""
        if self.positions == "all":
            return
        hidden = args[0] if args else kwargs.get("hidden_states")
        seq_len = hidden.shape[-2] if isinstance(hidden, Tensor) else 0
        cache = next((v for v in (*args, *kwargs.values()) if hasattr(v, "get_seq_length")), None)
        if cache is not None:
            self.continues_cache = int(cache.get_seq_length(layer_index)) > 0
        else:
            self.continues_cache = seq_len == 1

    def should_steer(self) -> bool:
        """Whether this call's positions are the ones asked for."""
        if self.positions == "all":
            return True
        return self.continues_cache == (self.positions == "generated")


def _split_output(output: Any) -> tuple[Tensor, tuple[Any, ...] | None]:
    if isinstance(output, Tensor):
        return output, None
    if isinstance(output, tuple) and output and isinstance(output[0], Tensor):
        return output[0], tuple(output[1:])
    raise YapoError(f"cannot steer a block whose output is {type(output).__name__}")


@contextlib.contextmanager
def add_to_layer(
    model: nn.Module, layer: int, delta_fn: DeltaFn, positions: Positions = "all"
) -> Iterator[None]:
    """Within the block, block ``layer`` outputs ``h + delta_fn(h)`` (masked by ``positions``).

    ``delta_fn`` receives the block's hidden states ``(batch, seq, d_model)`` and returns
    a tensor broadcastable to them, in their dtype and on their device.
    """
    if positions not in POSITIONS:
        raise YapoError(f"positions must be one of {POSITIONS}, got {positions!r}")
    index = resolve_layer(model, layer)
    block = decoder_blocks(model)[index]
    tracker = _PositionTracker(positions)

    def pre_hook(_module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        tracker.before_block(index, args, kwargs)

    def hook(_module: nn.Module, _args: Any, _kwargs: dict[str, Any], output: Any) -> Any:
        hidden, rest = _split_output(output)
        if not tracker.should_steer():
            return output
        steered = hidden + delta_fn(hidden)
        return steered if rest is None else (steered, *rest)

    # prepend=True: run before hooks that transformers itself registers to record
    # ``hidden_states``, so that recorded states show the steered stream.
    handles = [
        block.register_forward_pre_hook(pre_hook, with_kwargs=True),
        block.register_forward_hook(hook, with_kwargs=True, prepend=True),
    ]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()
