"""CAA: the mean difference of layer-``L`` states between chosen and rejected answers.

``v = mean over pairs of (h_L at the answer position with the chosen response −
h_L at the answer position with the rejected response)``, a dense vector applied like
BiPO's (``h' = h + d·λ·v``). Only blocks ``0..L`` run (no gradient, one pass).

The "answer position" (``position=``):

* ``"last"`` (default) — the last response token before the final EOS: in CAA's A/B
  format the answer letter, and for a free-text answer the token that has read it all;
* ``"first"`` — the first response token;
* ``"eos"`` — the final token (EOS);
* ``"mean"`` — the mean over the response tokens before the final EOS.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Literal

import torch
from torch import Tensor, nn

from yapo.errors import YapoError
from yapo.intervene import LayerSplit, input_device
from yapo.methods.batches import TokenizedPair, TokenizedSequence, collate
from yapo.methods.preference import frozen
from yapo.vectors.dense import DenseVector

AnswerPosition = Literal["last", "first", "eos", "mean"]
ANSWER_POSITIONS: tuple[AnswerPosition, ...] = ("last", "first", "eos", "mean")


def answer_positions(
    seq: TokenizedSequence, position: AnswerPosition, eos_token_id: int | None
) -> Tensor:
    """Indices (into the sequence) of the answer position(s) of one sequence."""
    if position not in ANSWER_POSITIONS:
        raise YapoError(f"position must be one of {', '.join(ANSWER_POSITIONS)}, got {position!r}")
    response = torch.nonzero(seq.response_mask).flatten()
    if position == "eos":
        return response[-1:]
    body = response
    if (
        eos_token_id is not None
        and len(response) > 1
        and int(seq.input_ids[response[-1]]) == int(eos_token_id)
    ):
        body = response[:-1]
    if position == "first":
        return body[:1]
    if position == "last":
        return body[-1:]
    return body


@torch.no_grad()
def contrast(
    model: nn.Module,
    layer: int,
    pairs: Sequence[TokenizedPair],
    pad_token_id: int,
    reduce: Callable[[Tensor], Tensor],
    *,
    position: AnswerPosition = "last",
    eos_token_id: int | None = None,
    batch_size: int = 8,
) -> tuple[Tensor, Tensor]:
    """``reduce`` of the answer-position states, per pair: (chosen, rejected), each (n, k).

    ``reduce`` maps the ``(positions, d_model)`` float32 states of one answer to one
    row (the mean for CAA; the mean SAE code for SAS).
    """
    if not pairs:
        raise YapoError("no training pairs")
    split = LayerSplit(model, layer)
    device = input_device(model)
    chosen, rejected = [], []
    with frozen(model):
        for start in range(0, len(pairs), batch_size):
            ids = list(range(start, min(start + batch_size, len(pairs))))
            chunk = [pairs[i] for i in ids]
            batch = collate(chunk, ids, pad_token_id).to(device)
            states = split.lower(batch.input_ids, batch.attention_mask).float()
            sequences = [p.chosen for p in chunk] + [p.rejected for p in chunk]
            rows = [
                reduce(states[r, answer_positions(seq, position, eos_token_id).to(device)])
                for r, seq in enumerate(sequences)
            ]
            chosen.extend(rows[: len(chunk)])
            rejected.extend(rows[len(chunk) :])
    return torch.stack(chosen), torch.stack(rejected)


def train_caa(
    model: nn.Module,
    layer: int,
    pairs: Sequence[TokenizedPair],
    pad_token_id: int,
    *,
    position: AnswerPosition = "last",
    eos_token_id: int | None = None,
    batch_size: int = 8,
    hyperparameters: dict[str, Any] | None = None,
) -> DenseVector:
    """The CAA vector of ``pairs`` at ``layer`` (see module docstring)."""
    chosen, rejected = contrast(
        model,
        layer,
        pairs,
        pad_token_id,
        lambda states: states.mean(dim=0),
        position=position,
        eos_token_id=eos_token_id,
        batch_size=batch_size,
    )
    vector = (chosen - rejected).mean(dim=0).cpu()
    hyper = {"position": position, "pairs": len(pairs), **(hyperparameters or {})}
    return DenseVector.create(vector, model, layer, method="caa", hyperparameters=hyper)
