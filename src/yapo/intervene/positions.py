"""Which positions a steering hook edits: the prompt's, the generated tokens', or all.

How prompt and generated positions are told apart: a forward call whose key/value
cache is empty (or that has no cache and more than one token) starts a new sequence,
and all its positions are prompt positions; a call that continues a non-empty cache
is a generation step, and its positions are generated. Generation without a cache
(``use_cache=False``) re-feeds the whole sequence, which then counts as prompt.
"""

from __future__ import annotations

from typing import Any, Literal

from torch import Tensor

Positions = Literal["all", "prompt", "generated"]
POSITIONS: tuple[Positions, ...] = ("all", "prompt", "generated")


class PositionTracker:
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
