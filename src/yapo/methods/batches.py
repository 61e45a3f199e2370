"""Preference pairs as token tensors, padded batches, and the per-sequence cache.

A batch of ``B`` pairs becomes one padded batch of ``2B`` sequences — the ``B``
chosen responses first, then the ``B`` rejected ones — so that chosen and rejected
go through the model together. Padding is on the right; ``response_mask`` marks the
response tokens (EOS included) whose log-probabilities are summed.

:class:`SequenceCache` holds, per sequence, what does not depend on the steering
vector: the layer-``L`` states, the reference (unsteered) log-probability, and, for
SAE-space methods, the sparse SAE code of every position.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from yapo.data.records import PreferencePair
from yapo.errors import YapoError


@dataclass(frozen=True)
class TokenizedSequence:
    input_ids: Tensor  # (t,) int64
    response_mask: Tensor  # (t,) bool


@dataclass(frozen=True)
class TokenizedPair:
    chosen: TokenizedSequence
    rejected: TokenizedSequence


@dataclass
class Batch:
    """``2B`` padded sequences: rows ``0..B-1`` chosen, rows ``B..2B-1`` rejected."""

    input_ids: Tensor
    attention_mask: Tensor
    response_mask: Tensor
    sequence_ids: list[int]  # cache key of each row: 2*pair for chosen, 2*pair+1 rejected

    @property
    def num_pairs(self) -> int:
        return int(self.input_ids.shape[0]) // 2

    def to(self, device: torch.device) -> Batch:
        return Batch(
            self.input_ids.to(device),
            self.attention_mask.to(device),
            self.response_mask.to(device),
            self.sequence_ids,
        )


def _as_sequence(input_ids: Any, response_mask: Any) -> TokenizedSequence:
    ids = torch.as_tensor(input_ids, dtype=torch.long).flatten()
    mask = torch.as_tensor(response_mask).flatten().bool()
    if ids.shape != mask.shape:
        raise YapoError("tokenize_pair returned input_ids and response_mask of different lengths")
    return TokenizedSequence(ids, mask)


def tokenize_pairs(
    tokenizer: Any, pairs: Sequence[PreferencePair], max_prompt_length: int = 512
) -> list[TokenizedPair]:
    """Tokenize each pair's prompt+chosen and prompt+rejected (see ``yapo.data.prompts``)."""
    from yapo.data.prompts import tokenize_pair

    out = []
    for i, pair in enumerate(pairs):
        sequences = []
        for response in (pair.chosen, pair.rejected):
            ids, mask = tokenize_pair(
                tokenizer, pair.prompt, response, max_prompt_length=max_prompt_length
            )
            seq = _as_sequence(ids, mask)
            if not bool(seq.response_mask.any()):
                raise YapoError(f"pair {pair.id or i}: a response tokenized to no tokens")
            sequences.append(seq)
        out.append(TokenizedPair(sequences[0], sequences[1]))
    return out


def collate(pairs: Sequence[TokenizedPair], pair_ids: Sequence[int], pad_token_id: int) -> Batch:
    """Right-pad chosen then rejected sequences of ``pairs`` into one batch."""
    sequences = [p.chosen for p in pairs] + [p.rejected for p in pairs]
    keys = [2 * i for i in pair_ids] + [2 * i + 1 for i in pair_ids]
    length = max(int(s.input_ids.numel()) for s in sequences)
    n = len(sequences)
    input_ids = torch.full((n, length), int(pad_token_id), dtype=torch.long)
    attention = torch.zeros((n, length), dtype=torch.long)
    response = torch.zeros((n, length), dtype=torch.bool)
    for row, seq in enumerate(sequences):
        t = int(seq.input_ids.numel())
        input_ids[row, :t] = seq.input_ids
        attention[row, :t] = 1
        response[row, :t] = seq.response_mask
    return Batch(input_ids, attention, response, keys)


@dataclass
class SparseCode:
    """The non-zero SAE code entries of one sequence: (position, latent, value)."""

    positions: Tensor
    latents: Tensor
    values: Tensor


@dataclass
class SequenceCache:
    """What never changes during training, per sequence key (see :class:`Batch`)."""

    states: dict[int, Tensor] = field(default_factory=dict)  # (t, d_model), model dtype
    reference: dict[int, float] = field(default_factory=dict)
    codes: dict[int, SparseCode] = field(default_factory=dict)

    def padded_states(self, batch: Batch, device: torch.device) -> Tensor:
        """Layer-``L`` states of the batch's rows, right-padded with zeros."""
        rows = [self.states[k] for k in batch.sequence_ids]
        length = int(batch.input_ids.shape[1])
        out = rows[0].new_zeros((len(rows), length, rows[0].shape[-1]))
        for i, states in enumerate(rows):
            out[i, : states.shape[0]] = states
        return out.to(device)

    def references(self, batch: Batch, device: torch.device) -> Tensor:
        values = [self.reference[k] for k in batch.sequence_ids]
        return torch.tensor(values, dtype=torch.float32, device=device)

    def batch_codes(self, batch: Batch, d_sae: int, device: torch.device) -> BatchCodes:
        """The batch's SAE codes restricted to the latents active anywhere in it."""
        length = int(batch.input_ids.shape[1])
        flat, latents, values = [], [], []
        for row, key in enumerate(batch.sequence_ids):
            code = self.codes[key]
            flat.append(code.positions + row * length)
            latents.append(code.latents)
            values.append(code.values)
        flat_t, latents_t, values_t = torch.cat(flat), torch.cat(latents), torch.cat(values)
        active, column = torch.unique(latents_t, return_inverse=True)
        dense = torch.zeros((len(batch.sequence_ids) * length, active.numel()))
        dense[flat_t, column] = values_t
        mask = torch.zeros(d_sae, dtype=torch.bool)
        mask[active] = True
        return BatchCodes(active.to(device), dense.to(device), mask.to(device))


@dataclass
class BatchCodes:
    """SAE codes of a batch: ``dense[row*seq + pos, j]`` is the code of latent ``active[j]``."""

    active: Tensor  # (a,) latent ids active somewhere in the batch
    dense: Tensor  # (rows*seq, a) float32
    active_mask: Tensor  # (d_sae,) bool
