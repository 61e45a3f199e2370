"""What a decoder block returns, split into its hidden states and the rest, and back.

Architectures disagree on a block's return value: recent transformers blocks return the
hidden states as a bare tensor, older ones (and GPT-2) a tuple whose first entry is the
hidden states, followed by attention weights or cache entries. Every hook that reads or
edits a block's output goes through these two functions, so that the next architecture
with yet another layout is taught to yapo in one place.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor

from yapo.errors import YapoError

Rest = tuple[Any, ...] | None
"""What follows the hidden states in a block's tuple output; ``None`` for a bare tensor."""


def split_output(output: Any, action: str = "read") -> tuple[Tensor, Rest]:
    """``(hidden_states, rest)`` of a block's output; ``action`` words the error.

    ``rest`` is ``None`` when the block returned a bare tensor, so that
    :func:`rebuild_output` gives back the same kind of value the model's loop expects.
    """
    if isinstance(output, Tensor):
        return output, None
    if isinstance(output, tuple) and output and isinstance(output[0], Tensor):
        return output[0], tuple(output[1:])
    raise YapoError(f"cannot {action} a block whose output is {type(output).__name__}")


def rebuild_output(hidden: Tensor, rest: Rest) -> Any:
    """The block output with ``hidden`` in place of its hidden states (inverse of the split)."""
    return hidden if rest is None else (hidden, *rest)
