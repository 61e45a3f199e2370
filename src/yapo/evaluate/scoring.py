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

Prefix caching (the default): the options of one prompt share every prompt token, so the
prompt (minus its last token) is run once per prompt with a key/value cache, the cache is
gathered once per option row, and only ``[last prompt token, *choice]`` is run per row.
With four options and short answers that is about a third of the tokens. A model whose
cache cannot be gathered by row, or a one-token prompt, falls back to whole rows; tests
check both paths against an unbatched forward on several architectures.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from yapo.data.prompts import tokenize_pair
from yapo.errors import YapoError
from yapo.intervene import cache_argument, input_device, supports_logits_to_keep
from yapo.vectors.base import SteeringVector
from yapo.vectors.steer import UNSTEERED, Steer

_NO_TRUNCATION = 1 << 40
T = TypeVar("T")


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


@dataclass(eq=False)
class ChoiceRow:
    """One (prompt, choice) pair as tokens; ``n_choice`` of the ids (at the end) are scored."""

    ids: list[int]
    n_choice: int
    prompt_index: int
    choice_index: int


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


def row_batches(rows: list[ChoiceRow], batch_size: int) -> Iterator[list[ChoiceRow]]:
    order = sorted(rows, key=lambda r: len(r.ids), reverse=True)
    for start in range(0, len(order), batch_size):
        yield order[start : start + batch_size]


def score_batch(
    model: nn.Module, batch: list[ChoiceRow], pad_id: int, device: torch.device, keep_ok: bool
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


def _progress(batches: list[T]) -> Iterator[T]:
    # disable=None: a progress bar on a terminal only (never in logs or tests).
    yield from tqdm(batches, desc="scoring", unit="batch", leave=False, disable=None)


def _cacheable(cache: Any) -> bool:
    return cache is not None and callable(getattr(cache, "batch_select_indices", None))


def left_pad(sequences: list[list[int]], pad_id: int) -> tuple[Tensor, Tensor]:
    """Token ids and attention mask of ``sequences``, padded on the left to one width."""
    width = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for i, sequence in enumerate(sequences):
        ids[i, width - len(sequence) :] = torch.tensor(sequence)
        mask[i, width - len(sequence) :] = 1
    return ids, mask


def score_prompt_batch(
    model: nn.Module,
    prompts: list[list[ChoiceRow]],
    pad_id: int,
    device: torch.device,
    keep_ok: bool,
) -> list[float] | None:
    """Scores of every row of these prompts' groups, with the shared prefix run once.

    ``prompts[b]`` are the rows of one prompt (same prompt ids, different choices). Returns
    the row scores in order, or ``None`` when the model's cache cannot be gathered by row
    (the caller then scores whole rows).
    """
    prefixes = [group[0].ids[: len(group[0].ids) - group[0].n_choice - 1] for group in prompts]
    prefix_ids, prefix_mask = left_pad(prefixes, pad_id)
    kwargs: dict[str, Any] = {
        "input_ids": prefix_ids.to(device),
        "attention_mask": prefix_mask.to(device),
        "position_ids": (prefix_mask.cumsum(-1) - 1).clamp(min=0).to(device),
        "use_cache": True,
    }
    if keep_ok:
        kwargs["logits_to_keep"] = 1
    out = model(**kwargs)
    # ``cache`` in recent transformers (``past_key_values`` is a deprecated alias there).
    fields = out.keys()
    cache = out["cache"] if "cache" in fields else out.past_key_values
    if not _cacheable(cache):
        return None
    rows = [row for group in prompts for row in group]
    owner = torch.tensor([b for b, group in enumerate(prompts) for _ in group])
    cache.batch_select_indices(owner.to(device))
    tails = [row.ids[len(prefixes[owner[r]]) :] for r, row in enumerate(rows)]
    length = max(len(t) for t in tails)
    tail_ids = torch.full((len(rows), length), pad_id, dtype=torch.long)
    tail_mask = torch.zeros((len(rows), length), dtype=torch.long)
    for r, tail in enumerate(tails):
        tail_ids[r, : len(tail)] = torch.tensor(tail)
        tail_mask[r, : len(tail)] = 1
    starts = torch.tensor([len(prefixes[b]) for b in owner.tolist()])
    logits = model(
        input_ids=tail_ids.to(device),
        attention_mask=torch.cat([prefix_mask[owner], tail_mask], dim=1).to(device),
        position_ids=(starts.unsqueeze(1) + torch.arange(length)).to(device),
        use_cache=True,
        **{cache_argument(model): cache},
    ).logits
    log_probs = torch.log_softmax(logits[:, :-1].float(), dim=-1)
    targets = tail_ids[:, 1:].to(log_probs.device)
    token_lp = log_probs.gather(-1, targets.unsqueeze(-1)).squeeze(-1)  # (R, length-1)
    n_choice = torch.tensor([row.n_choice for row in rows])
    mask = (torch.arange(length - 1).unsqueeze(0) < n_choice.unsqueeze(1)).to(token_lp.device)
    return [float(x) for x in (token_lp * mask).sum(-1).cpu().tolist()]


def prompt_batches(rows: list[ChoiceRow], batch_size: int) -> Iterator[list[list[ChoiceRow]]]:
    """Whole prompts (all their rows) per batch, at most ``batch_size`` rows unless one
    prompt alone has more; prompts of similar length together (less padding)."""
    groups: dict[int, list[ChoiceRow]] = {}
    for row in rows:
        groups.setdefault(row.prompt_index, []).append(row)
    order = sorted(groups.values(), key=lambda g: len(g[0].ids) - g[0].n_choice, reverse=True)
    batch: list[list[ChoiceRow]] = []
    size = 0
    for group in order:
        if batch and size + len(group) > batch_size:
            yield batch
            batch, size = [], 0
        batch.append(group)
        size += len(group)
    if batch:
        yield batch


def encode_rows(
    tokenizer: Any, prompts: Sequence[str], choices: Sequence[Sequence[str]]
) -> list[ChoiceRow]:
    """Every (prompt, choice) pair as token ids, checked (see :func:`encode_pair`)."""
    if len(prompts) != len(choices):
        raise YapoError(f"got {len(prompts)} prompts but {len(choices)} lists of choices")
    rows: list[ChoiceRow] = []
    for i, (prompt, options) in enumerate(zip(prompts, choices)):
        if not options:
            raise YapoError(f"prompt {i} has no choices to score")
        for j, choice in enumerate(options):
            ids, n_choice = encode_pair(tokenizer, prompt, choice)
            rows.append(ChoiceRow(ids, n_choice, i, j))
    return rows


def pad_token_id(tokenizer: Any) -> int:
    """The id padded positions get (masked out, so any id works; 0 without a pad token)."""
    pad_id = getattr(tokenizer, "pad_token_id", None)
    return int(pad_id) if pad_id is not None else 0


def split_prefix_rows(
    rows: list[ChoiceRow], prefix_cache: bool
) -> tuple[list[ChoiceRow], list[ChoiceRow]]:
    """(rows scored with the prompt prefix cached, rows scored whole).

    A prompt of one token (BOS alone) leaves no prefix to cache.
    """
    if not prefix_cache:
        return [], rows
    cached = [r for r in rows if len(r.ids) - r.n_choice >= 2]
    return cached, [r for r in rows if len(r.ids) - r.n_choice < 2]


def score_rows(
    model: nn.Module,
    rows: list[ChoiceRow],
    pad_id: int,
    *,
    steer: Steer = UNSTEERED,
    batch_size: int = 16,
    prefix_cache: bool = True,
) -> tuple[dict[int, float], Throughput]:
    """Summed choice log-probs of encoded rows under one condition: ``{id(row): sum}``.

    This is the straightforward path: the whole model (steered by hooks) per condition.
    """
    sums: dict[int, float] = {}
    stats = Throughput()
    if not rows:
        return sums, stats
    device = input_device(model)
    keep_ok = supports_logits_to_keep(model)
    start = time.perf_counter()
    with steer.apply(model), torch.no_grad():
        cached, whole_rows = split_prefix_rows(rows, prefix_cache)
        for groups in _progress(list(prompt_batches(cached, batch_size))):
            values = score_prompt_batch(model, groups, pad_id, device, keep_ok)
            batch = [row for group in groups for row in group]
            if values is None:  # this model's cache cannot be gathered by row
                whole_rows = rows
                break
            for row, value in zip(batch, values):
                sums[id(row)] = value
            stats.forward_passes += 2
            stats.sequences += len(batch)
            stats.tokens += sum(len(g[0].ids) - g[0].n_choice - 1 for g in groups)
            stats.tokens += sum(r.n_choice + 1 for r in batch)
        for batch in _progress(list(row_batches(whole_rows, batch_size))):
            for row, value in zip(batch, score_batch(model, batch, pad_id, device, keep_ok)):
                sums[id(row)] = float(value)
            stats.forward_passes += 1
            stats.sequences += len(batch)
            stats.tokens += sum(len(r.ids) for r in batch)
    stats.seconds = time.perf_counter() - start
    return sums, stats


def rows_to_scores(
    rows: list[ChoiceRow],
    sums: dict[int, float],
    choices: Sequence[Sequence[str]],
    normalize: bool,
) -> list[list[float]]:
    """``scores[i][j]`` from per-row sums (divided by the choice's length with ``normalize``)."""
    scores: list[list[float]] = [[0.0] * len(options) for options in choices]
    for row in rows:
        total = sums[id(row)]
        scores[row.prompt_index][row.choice_index] = total / row.n_choice if normalize else total
    return scores


def score_choices_with_stats(
    model: nn.Module,
    tokenizer: Any,
    prompts: Sequence[str],
    choices: Sequence[Sequence[str]],
    *,
    steer: Steer = UNSTEERED,
    batch_size: int = 16,
    normalize: bool = False,
    prefix_cache: bool = True,
) -> tuple[list[list[float]], Throughput]:
    """:func:`score_choices` under ``steer``, plus what it cost (sequences, tokens actually
    run, seconds)."""
    rows = encode_rows(tokenizer, prompts, choices)
    if batch_size < 1:
        raise YapoError(f"batch_size must be at least 1, got {batch_size}")
    sums, stats = score_rows(
        model,
        rows,
        pad_token_id(tokenizer),
        steer=steer,
        batch_size=batch_size,
        prefix_cache=prefix_cache,
    )
    return rows_to_scores(rows, sums, choices, normalize), stats


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
    prefix_cache: bool = True,
) -> list[list[float]]:
    """Log-probability of each choice continuation given its prompt.

    ``scores[i][j] = log p(choices[i][j] | prompts[i])`` summed over the choice's tokens,
    or averaged per token with ``normalize=True``. With ``vector`` (and a non-zero
    ``multiplier``) the model is steered by ``vector.apply(model, multiplier, direction)``
    at every position. ``batch_size`` counts (prompt, choice) rows per forward pass.
    ``prefix_cache`` runs each prompt once and only the choices per row (same scores).
    """
    scores, _ = score_choices_with_stats(
        model,
        tokenizer,
        prompts,
        choices,
        steer=Steer(vector, multiplier, direction),
        batch_size=batch_size,
        normalize=normalize,
        prefix_cache=prefix_cache,
    )
    return scores
