"""Log-probabilities of responses, summed over response tokens only.

Token ``t`` of a sequence is predicted by the logits at position ``t - 1``; a
response's log-probability is the sum over its tokens (its final EOS included, the
prompt excluded). Two ways to get it, which must agree:

* :func:`full_logprobs` — the straightforward one: the whole model, logits at every
  position (the oracle and the ``--no-cache`` path);
* :func:`split_logprobs` — from layer-``L`` states through :class:`LayerSplit`, with
  the LM head run only on the rows that predict a response token (the vocabulary
  projection is the largest single cost of a small model's step).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from yapo.errors import YapoError
from yapo.intervene import LayerSplit

HEAD_CHUNK = 128  # rows of logits computed at once when no gradient is needed


@dataclass(frozen=True)
class ResponseIndex:
    """Where the response tokens of a padded batch are, and who predicts them."""

    rows: Tensor  # (n,) batch row of each response token
    positions: Tensor  # (n,) position whose logits predict it (= token position - 1)
    targets: Tensor  # (n,) the token ids
    batch_size: int

    @classmethod
    def build(cls, input_ids: Tensor, response_mask: Tensor) -> ResponseIndex:
        mask = response_mask.bool().clone()
        if bool(mask[:, 0].any()):
            raise YapoError("a response cannot start at position 0: nothing predicts it")
        rows, token_pos = torch.nonzero(mask, as_tuple=True)
        return cls(rows, token_pos - 1, input_ids[rows, token_pos], int(input_ids.shape[0]))

    def sum_per_row(self, token_logprobs: Tensor) -> Tensor:
        out = torch.zeros(self.batch_size, dtype=token_logprobs.dtype, device=token_logprobs.device)
        return out.index_add(0, self.rows, token_logprobs)


def _token_logprobs(logits: Tensor, targets: Tensor) -> Tensor:
    # cross_entropy fuses log-softmax and gather (no full log-prob matrix kept).
    return -F.cross_entropy(logits.float(), targets, reduction="none")


def full_logprobs(
    model: nn.Module, input_ids: Tensor, attention_mask: Tensor, response_mask: Tensor
) -> Tensor:
    """Per-row response log-probs from one ordinary full forward (logits everywhere)."""
    index = ResponseIndex.build(input_ids, response_mask)
    logits = model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits
    picked = logits[index.rows, index.positions]
    return index.sum_per_row(_token_logprobs(picked, index.targets.to(picked.device)))


def split_logprobs(
    split: LayerSplit, states: Tensor, attention_mask: Tensor, index: ResponseIndex
) -> Tensor:
    """Per-row response log-probs from (possibly steered) layer-``L`` states.

    Without gradient (reference log-probs) the LM head runs on ``HEAD_CHUNK`` rows at a
    time, so a large vocabulary's logits never fill memory at once.
    """
    hidden = split.upper(states, attention_mask)
    picked = hidden[index.rows.to(hidden.device), index.positions.to(hidden.device)]
    targets = index.targets.to(hidden.device)
    if torch.is_grad_enabled():
        return index.sum_per_row(_token_logprobs(split.logits(picked), targets))
    parts = [
        _token_logprobs(split.logits(picked[i : i + HEAD_CHUNK]), targets[i : i + HEAD_CHUNK])
        for i in range(0, picked.shape[0], HEAD_CHUNK)
    ]
    token_logprobs = torch.cat(parts) if parts else picked.new_zeros(0)
    return index.sum_per_row(token_logprobs)


def check_split_exact(
    split: LayerSplit,
    input_ids: Tensor,
    attention_mask: Tensor,
    response_mask: Tensor,
    tolerance: float | None = None,
) -> float:
    """Compare the split path with the full forward on one batch; raise if they differ.

    Returns the largest absolute difference of the summed log-probs. The default
    tolerance is 1e-3 (float32) or 0.25 (half precision) per sequence.
    """
    with torch.no_grad():
        full = full_logprobs(split.model, input_ids, attention_mask, response_mask)
        states = split.lower(input_ids, attention_mask)
        index = ResponseIndex.build(input_ids, response_mask)
        fast = split_logprobs(split, states, attention_mask, index)
    diff = float((full - fast).abs().max()) if full.numel() else 0.0
    if tolerance is None:
        tolerance = 1e-3 if states.dtype == torch.float32 else 0.25
    if not diff <= tolerance:
        raise YapoError(
            f"running only the blocks above layer {split.layer} does not reproduce the full "
            f"forward of {type(split.model).__name__} (log-prob difference {diff:.3g} > "
            f"{tolerance:g}); train with --no-cache for this architecture"
        )
    return diff
