"""Log-likelihood scoring of answer choices, batched with padding, optionally steered.

For each prompt and each of its choices we compute ``log p(choice | prompt)``: the sum
of the log-probabilities of the choice's tokens (or their mean with ``normalize=True``,
which stops long options from losing just for being long). This is the standard way to
evaluate *base* models on multiple-choice data (lm-evaluation-harness does the same),
and it is reused for MCQ letters, option texts, BiPO's A/B behaviour tasks and MMLU.

How a (prompt, choice) pair becomes tokens: exactly as the trainers tokenize a
(prompt, response) pair (:func:`yapo.data.prompts.tokenize_pair`, without the final EOS
and without truncation) — the prompt with BOS (unless it already starts with the BOS
text, as chat-template output does), then the choice tokenized on its own. A vector is
therefore scored on the very tokens it was trained to prefer. Because the choice is not
merged with the prompt, write the separator you mean into the choice (``" B"`` if the
answer should read ``"Answer: B"``).

Batching: all (prompt, choice) rows are sorted by length, cut into batches of
``batch_size`` rows, *left*-padded (with matching ``position_ids``) so that every row's
choice ends at the last position; the model is then asked for the logits of the last
few positions only (``logits_to_keep``), which keeps memory small even with
262k-token vocabularies. Padding never changes a score: a test checks batched scores
against one-at-a-time scores.
"""

from __future__ import annotations

import contextlib
import inspect
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from yapo.data.prompts import tokenize_pair
from yapo.errors import YapoError
from yapo.vectors.base import SteeringVector

_NO_TRUNCATION = 1 << 40


@dataclass
class Throughput:
    """How much work a scoring or generation call did, and how fast."""

    sequences: int = 0
    tokens: int = 0
    seconds: float = 0.0
    forward_passes: int = 0

    def add(self, other: Throughput) -> None:
        self.sequences += other.sequences
        self.tokens += other.tokens
        self.seconds += other.seconds
        self.forward_passes += other.forward_passes

    def to_json(self) -> dict[str, float]:
        seconds = max(self.seconds, 1e-9)
        return {
            "sequences": self.sequences,
            "tokens": self.tokens,
            "seconds": round(self.seconds, 4),
            "forward_passes": self.forward_passes,
            "sequences_per_second": round(self.sequences / seconds, 3),
            "tokens_per_second": round(self.tokens / seconds, 1),
        }


@dataclass
class _Row:
    ids: list[int]
    n_choice: int
    prompt_index: int
    choice_index: int


def input_device(model: nn.Module) -> torch.device:
    """The device the model's input embeddings live on (works with ``device_map``)."""
    get = getattr(model, "get_input_embeddings", None)
    embeddings = get() if callable(get) else None
    if isinstance(embeddings, nn.Module):
        for parameter in embeddings.parameters():
            return parameter.device
    return next(model.parameters()).device


def starts_with_bos(tokenizer: Any, text: str) -> bool:
    """Whether ``text`` already carries the BOS marker (e.g. from a chat template)."""
    bos = getattr(tokenizer, "bos_token", None)
    return bool(bos) and text.startswith(str(bos))


def encode_pair(tokenizer: Any, prompt: str, choice: str) -> tuple[list[int], int]:
    """Token ids of ``prompt`` then ``choice``, and how many of them (at the end) are the choice."""
    if not choice:
        raise YapoError("an answer choice is empty; every choice needs at least one character")
    ids, mask = tokenize_pair(tokenizer, prompt, choice, max_prompt_length=_NO_TRUNCATION)
    n_choice = sum(mask) - 1  # tokenize_pair appends EOS to the response; it is not scored
    ids = ids[:-1]
    if n_choice < 1:
        raise YapoError(f"the choice {choice!r} tokenizes to nothing")
    if len(ids) == n_choice:
        raise YapoError(
            "a prompt tokenizes to nothing and the tokenizer adds no BOS token, so the first "
            "token of a choice has nothing to be predicted from; give a non-empty prompt"
        )
    return ids, n_choice


def _supports_logits_to_keep(model: nn.Module) -> bool:
    try:
        return "logits_to_keep" in inspect.signature(model.forward).parameters
    except (TypeError, ValueError):  # pragma: no cover - exotic wrappers
        return False


def steering(
    model: nn.Module, vector: SteeringVector | None, multiplier: float, direction: int
) -> contextlib.AbstractContextManager[Any]:
    """``vector.apply(...)`` or a no-op when there is nothing to steer with."""
    if vector is None or float(multiplier) == 0.0:
        if direction not in (-1, 1):
            raise YapoError(f"direction must be +1 or -1, got {direction!r}")
        return contextlib.nullcontext()
    return vector.apply(model, multiplier=multiplier, direction=direction)


def _batches(rows: list[_Row], batch_size: int) -> Iterator[list[_Row]]:
    order = sorted(rows, key=lambda r: len(r.ids), reverse=True)
    for start in range(0, len(order), batch_size):
        yield order[start : start + batch_size]


def _score_batch(
    model: nn.Module, batch: list[_Row], pad_id: int, device: torch.device, keep_ok: bool
) -> Tensor:
    """Sum of choice-token log-probs for each row of one left-padded batch (float32)."""
    length = max(len(r.ids) for r in batch)
    keep = max(r.n_choice for r in batch) + 1
    input_ids = torch.full((len(batch), length), pad_id, dtype=torch.long)
    attention = torch.zeros((len(batch), length), dtype=torch.long)
    n_choice = torch.tensor([r.n_choice for r in batch])
    for i, row in enumerate(batch):
        input_ids[i, length - len(row.ids) :] = torch.tensor(row.ids)
        attention[i, length - len(row.ids) :] = 1
    positions = (attention.cumsum(-1) - 1).clamp(min=0)
    kwargs: dict[str, Any] = {
        "input_ids": input_ids.to(device),
        "attention_mask": attention.to(device),
        "position_ids": positions.to(device),
        "use_cache": False,
    }
    if keep_ok:
        kwargs["logits_to_keep"] = keep
    logits = model(**kwargs).logits[:, -keep:, :]
    log_probs = torch.log_softmax(logits[:, :-1].float(), dim=-1)
    targets = input_ids[:, length - keep + 1 :].to(log_probs.device)
    token_lp = log_probs.gather(-1, targets.unsqueeze(-1)).squeeze(-1)  # (B, keep-1)
    offsets = torch.arange(keep - 1).unsqueeze(0)
    mask = (offsets >= (keep - 1 - n_choice).unsqueeze(1)).to(token_lp.device)
    return (token_lp * mask).sum(-1).cpu()


def score_choices_with_stats(
    model: nn.Module,
    tokenizer: Any,
    prompts: Sequence[str],
    choices: Sequence[Sequence[str]],
    *,
    vector: SteeringVector | None = None,
    multiplier: float = 0.0,
    direction: int = 1,
    batch_size: int = 16,
    normalize: bool = False,
) -> tuple[list[list[float]], Throughput]:
    """:func:`score_choices` plus what it cost (sequences, tokens, seconds)."""
    if len(prompts) != len(choices):
        raise YapoError(f"got {len(prompts)} prompts but {len(choices)} lists of choices")
    if batch_size < 1:
        raise YapoError(f"batch_size must be at least 1, got {batch_size}")
    rows: list[_Row] = []
    for i, (prompt, options) in enumerate(zip(prompts, choices)):
        if not options:
            raise YapoError(f"prompt {i} has no choices to score")
        for j, choice in enumerate(options):
            ids, n_choice = encode_pair(tokenizer, prompt, choice)
            rows.append(_Row(ids, n_choice, i, j))
    scores: list[list[float]] = [[0.0] * len(options) for options in choices]
    stats = Throughput()
    if not rows:
        return scores, stats
    pad_id = getattr(tokenizer, "pad_token_id", None)
    pad_id = int(pad_id) if pad_id is not None else 0
    device = input_device(model)
    keep_ok = _supports_logits_to_keep(model)
    start = time.perf_counter()
    with steering(model, vector, multiplier, direction), torch.no_grad():
        batches = list(_batches(rows, batch_size))
        # disable=None: a progress bar on a terminal only (never in logs or tests).
        for batch in tqdm(batches, desc="scoring", unit="batch", leave=False, disable=None):
            sums = _score_batch(model, batch, pad_id, device, keep_ok)
            for row, value in zip(batch, sums.tolist()):
                total = float(value)
                scores[row.prompt_index][row.choice_index] = (
                    total / row.n_choice if normalize else total
                )
            stats.forward_passes += 1
            stats.sequences += len(batch)
            stats.tokens += sum(len(r.ids) for r in batch)
    stats.seconds = time.perf_counter() - start
    return scores, stats


def score_choices(
    model: nn.Module,
    tokenizer: Any,
    prompts: list[str],
    choices: list[list[str]],
    *,
    vector: SteeringVector | None = None,
    multiplier: float = 0.0,
    direction: int = 1,
    batch_size: int = 16,
    normalize: bool = False,
) -> list[list[float]]:
    """Log-probability of each choice continuation given its prompt.

    ``scores[i][j] = log p(choices[i][j] | prompts[i])`` summed over the choice's tokens,
    or averaged per token with ``normalize=True``. With ``vector`` (and a non-zero
    ``multiplier``) the model is steered by ``vector.apply(model, multiplier, direction)``
    at every position. ``batch_size`` counts (prompt, choice) rows per forward pass.
    """
    scores, _ = score_choices_with_stats(
        model,
        tokenizer,
        prompts,
        choices,
        vector=vector,
        multiplier=multiplier,
        direction=direction,
        batch_size=batch_size,
        normalize=normalize,
    )
    return scores
