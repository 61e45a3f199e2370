"""Score many steering conditions on the same choices from one pass of the lower blocks.

A *condition* is the model unsteered, or steered by one vector at one multiplier λ and
direction d. Steering edits the output of block ``L``, so blocks ``0..L`` compute the
same states for every condition: an evaluation that compares conditions (``eval``,
``sweep``, ``compare``, λ selection, BiPO's A/B tasks, MMLU) only needs them once.

How :func:`score_conditions` runs, per batch of prompts (at most ``batch_size``
option rows, as in :mod:`yapo.evaluate.scoring`):

1. **Once**: blocks ``0..L`` on each prompt (minus its last token) with a key/value
   cache, then on ``[last prompt token, *choice]`` per option row reading that cache.
   This gives the unsteered layer-``L`` states ``h_L`` of every position and the
   prompts' key/values of blocks ``0..L``.
2. **Per condition**: the condition's own edit ``h_L + vector.delta(h_L, λ, d)`` on the
   cached states, then only blocks ``L+1..N`` (through :class:`LayerSplit`): on the
   prompt, whose key/values of blocks ``L+1..N`` are gathered once per option row, then
   on the option rows; logits only where a choice token is predicted. Several
   conditions are stacked into one forward pass, up to ``pass_rows`` rows.

Vectors at different layers are grouped by layer (each group has its own lower pass);
the unsteered condition joins the largest group. Identical conditions are scored once.
The states are kept for one batch of prompts at a time, so memory does not grow with
the data set.

The straightforward path — the whole model per condition, steered by hooks
(:func:`yapo.evaluate.scoring.score_rows`) — stays the oracle (``shared_lower=False``,
``--no-cache`` on the command line). It is also what a model falls back to when it
cannot be split (no decoder blocks found, a cache layout this does not know, or the
split not reproducing the full forward on the first batch), with a log line saying so.
"""

from __future__ import annotations

import copy
import logging
import math
import time
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from yapo.errors import YapoError
from yapo.evaluate.scoring import (
    ChoiceRow,
    Throughput,
    encode_rows,
    left_pad,
    pad_token_id,
    prompt_batches,
    row_batches,
    rows_to_scores,
    score_batch,
    score_prompt_batch,
    score_rows,
    split_prefix_rows,
)
from yapo.intervene import LayerSplit, input_device, supports_logits_to_keep
from yapo.models.layers import resolve_layer
from yapo.vectors.steer import Steer

logger = logging.getLogger(__name__)

HEAD_CHUNK = 256  # picked positions per LM-head call (bounds the logits of big vocabularies)
PASS_ROWS_PER_BATCH = 4  # default pass_rows = this × batch_size


@dataclass
class ConditionScores:
    """``scores[i][j]`` of one condition (as :func:`score_choices`) and what it cost.

    With the shared path the cost of the shared lower passes is split evenly over the
    conditions of a layer group, and a stacked pass's time over the conditions in it.
    """

    scores: list[list[float]]
    throughput: Throughput = field(default_factory=Throughput)


_Key = tuple[int, float, int] | None


def _key(condition: Steer) -> _Key:
    if condition.is_unsteered:
        return None
    return (id(condition.vector), float(condition.multiplier), int(condition.direction))


def _steer(condition: Steer, states: Tensor) -> Tensor:
    if condition.is_unsteered:
        return states
    return states + condition.delta(states)


class _Unsplittable(Exception):
    """This model cannot be scored through :class:`LayerSplit` (the reason is the text)."""


# Split exactness checked once per (model, layer, prompt-cache mode): True = verified.
_VERDICTS: weakref.WeakKeyDictionary[nn.Module, dict[tuple[int, bool], bool]] = (
    weakref.WeakKeyDictionary()
)


def score_conditions(
    model: nn.Module,
    tokenizer: Any,
    prompts: Sequence[str],
    choices: Sequence[Sequence[str]],
    conditions: Sequence[Steer],
    *,
    batch_size: int = 16,
    normalize: bool = False,
    prefix_cache: bool = True,
    shared_lower: bool = True,
    pass_rows: int | None = None,
) -> list[ConditionScores]:
    """Per-choice log-likelihoods of every prompt under every condition, in order.

    ``result[c].scores[i][j] = log p(choices[i][j] | prompts[i])`` under
    ``conditions[c]`` — the same numbers as :func:`yapo.evaluate.scoring.score_choices`
    with that condition's vector, multiplier and direction. ``shared_lower=True`` runs
    blocks ``0..L`` once per batch of prompts for all conditions (see the module text);
    ``pass_rows`` caps the rows (option rows × stacked conditions) of one upper-block
    pass, ``4 × batch_size`` by default.
    """
    if batch_size < 1:
        raise YapoError(f"batch_size must be at least 1, got {batch_size}")
    if pass_rows is not None and pass_rows < 1:
        raise YapoError(f"pass_rows must be at least 1, got {pass_rows}")
    for condition in conditions:
        if condition.vector is not None:
            condition.vector.check_fits(model)
    rows = encode_rows(tokenizer, prompts, choices)
    unique: dict[_Key, Steer] = {}
    for condition in conditions:
        unique.setdefault(_key(condition), condition)
    pad_id = pad_token_id(tokenizer)
    results: dict[_Key, tuple[dict[int, float], Throughput]] = {}
    steered = [key for key in unique if key is not None]
    if shared_lower and rows and steered and len(unique) > 1:
        limit = pass_rows or PASS_ROWS_PER_BATCH * batch_size
        results = _score_shared(model, rows, pad_id, unique, batch_size, prefix_cache, limit)
    for key, condition in unique.items():
        if key not in results:
            results[key] = score_rows(
                model,
                rows,
                pad_id,
                steer=condition,
                batch_size=batch_size,
                prefix_cache=prefix_cache,
            )
    return [
        ConditionScores(
            rows_to_scores(rows, results[_key(c)][0], choices, normalize),
            copy.copy(results[_key(c)][1]),
        )
        for c in conditions
    ]


def _score_shared(
    model: nn.Module,
    rows: list[ChoiceRow],
    pad_id: int,
    unique: dict[_Key, Steer],
    batch_size: int,
    prefix_cache: bool,
    limit: int,
) -> dict[_Key, tuple[dict[int, float], Throughput]]:
    """Sums and costs of the conditions whose layer group could share its lower blocks;
    a group that cannot is left out (and scored the straightforward way by the caller)."""
    results: dict[_Key, tuple[dict[int, float], Throughput]] = {}
    for layer, keys in _layer_groups(model, unique).items():
        group = [unique[k] for k in keys]
        try:
            sums = _score_group(
                model,
                rows,
                pad_id,
                layer,
                group,
                batch_size=batch_size,
                prefix_cache=prefix_cache,
                limit=limit,
            )
        except _Unsplittable as reason:
            logger.warning(
                "scoring each condition with a full forward instead of sharing blocks 0..%d: %s",
                layer,
                reason,
            )
            continue
        results.update(zip(keys, sums))
    return results


def _layer_groups(model: nn.Module, unique: dict[_Key, Steer]) -> dict[int, list[_Key]]:
    """Steered conditions by (resolved) layer; the unsteered one joins the largest group."""
    groups: dict[int, list[_Key]] = {}
    for key, condition in unique.items():
        if key is not None:
            assert condition.vector is not None
            groups.setdefault(resolve_layer(model, condition.vector.layer), []).append(key)
    if None in unique:
        largest = max(groups, key=lambda layer: len(groups[layer]))
        groups[largest].insert(0, None)
    return groups


def _new_cache(model: nn.Module) -> Any:
    """An empty transformers cache laid out like the model's own (sliding layers too)."""
    try:
        from transformers import DynamicCache
    except ImportError as error:  # pragma: no cover - transformers is a dependency
        raise _Unsplittable("transformers has no DynamicCache") from error
    config = getattr(model, "config", None)
    try:
        cache = DynamicCache(config=config) if config is not None else DynamicCache()
    except (TypeError, ValueError, AttributeError) as error:
        raise _Unsplittable(f"cannot build a key/value cache for it ({error})") from error
    if not isinstance(getattr(cache, "layers", None), list):
        raise _Unsplittable("this transformers version's cache has no per-layer list")
    return cache


def _positions(mask: Tensor) -> Tensor:
    return (mask.cumsum(-1) - 1).clamp(min=0)


@dataclass
class _Shared:
    """What one batch of rows shares across conditions: unsteered ``h_L`` and masks.

    Prefix mode: ``states`` are the prompts' (minus the last token) ``h_L``, ``tails``
    the option rows' ``[last prompt token, *choice]`` states; ``lower_cache`` holds the
    prompts' key/values of blocks ``0..L``. Whole-row mode: ``states`` are full rows.
    """

    rows: list[ChoiceRow]
    states: Tensor
    mask: Tensor
    positions: Tensor
    # prefix mode only
    tails: Tensor | None = None
    tail_ids: Tensor | None = None
    tail_mask: Tensor | None = None
    tail_positions: Tensor | None = None
    owner: Tensor | None = None
    lower_cache: Any = None
    # whole-row mode only
    ids: Tensor | None = None
    tokens: int = 0


def _lower_prefix(
    split: LayerSplit, groups: list[list[ChoiceRow]], pad_id: int, device: torch.device
) -> _Shared:
    """Blocks ``0..L`` once for these prompts and their option rows (unsteered)."""
    rows = [row for group in groups for row in group]
    prefixes = [g[0].ids[: len(g[0].ids) - g[0].n_choice - 1] for g in groups]
    prefix_ids, prefix_mask = left_pad(prefixes, pad_id)
    positions = _positions(prefix_mask)
    cache = _new_cache(split.model)
    states = split.lower(
        prefix_ids.to(device),
        prefix_mask.to(device),
        position_ids=positions.to(device),
        cache=cache,
    )
    width = prefix_ids.shape[1]
    if cache.get_seq_length() != width or len(cache.layers) <= split.layer:
        raise _Unsplittable("its blocks do not fill the key/value cache this path reads")
    owner = torch.tensor([b for b, group in enumerate(groups) for _ in group])
    row_cache = copy.copy(cache)
    row_cache.layers = [copy.copy(layer) for layer in cache.layers]
    row_cache.batch_select_indices(owner.to(device))
    tails = [row.ids[len(prefixes[int(b)]) :] for row, b in zip(rows, owner)]
    length = max(len(t) for t in tails)
    tail_ids = torch.full((len(rows), length), pad_id, dtype=torch.long)
    tail_mask = torch.zeros((len(rows), length), dtype=torch.long)
    for r, tail in enumerate(tails):
        tail_ids[r, : len(tail)] = torch.tensor(tail)
        tail_mask[r, : len(tail)] = 1
    starts = torch.tensor([len(prefixes[int(b)]) for b in owner])
    tail_positions = starts.unsqueeze(1) + torch.arange(length)
    full_mask = torch.cat([prefix_mask[owner], tail_mask], dim=1)
    tail_states = split.lower(
        tail_ids.to(device),
        full_mask.to(device),
        position_ids=tail_positions.to(device),
        cache=row_cache,
    )
    return _Shared(
        rows=rows,
        states=states,
        mask=prefix_mask,
        positions=positions,
        tails=tail_states,
        tail_ids=tail_ids,
        tail_mask=full_mask,
        tail_positions=tail_positions,
        owner=owner,
        lower_cache=cache,
        tokens=sum(len(p) for p in prefixes) + sum(len(t) for t in tails),
    )


def _lower_whole(
    split: LayerSplit, rows: list[ChoiceRow], pad_id: int, device: torch.device
) -> _Shared:
    ids, mask = left_pad([row.ids for row in rows], pad_id)
    positions = _positions(mask)
    states = split.lower(ids.to(device), mask.to(device), position_ids=positions.to(device))
    return _Shared(
        rows=rows,
        states=states,
        mask=mask,
        positions=positions,
        ids=ids,
        tokens=sum(len(r.ids) for r in rows),
    )


def _choice_logprob_sums(
    split: LayerSplit, hidden: Tensor, targets: Tensor, predict: Tensor
) -> Tensor:
    """Per-row sums of ``log p(targets)`` at the ``predict`` positions of ``hidden``.

    ``hidden`` is ``(rows, T, d)``, ``targets`` and ``predict`` (bool) ``(rows, T)``;
    the LM head runs only on the picked positions, ``HEAD_CHUNK`` at a time.
    """
    row_index, position = torch.nonzero(predict, as_tuple=True)
    picked = hidden[row_index.to(hidden.device), position.to(hidden.device)]
    wanted = targets[row_index, position].to(hidden.device)
    parts = [
        -F.cross_entropy(
            split.logits(picked[i : i + HEAD_CHUNK]).float(),
            wanted[i : i + HEAD_CHUNK],
            reduction="none",
        )
        for i in range(0, picked.shape[0], HEAD_CHUNK)
    ]
    token_lp = torch.cat(parts) if parts else picked.new_zeros(0, dtype=torch.float32)
    sums = torch.zeros(hidden.shape[0], dtype=torch.float32, device=token_lp.device)
    return sums.index_add(0, row_index.to(token_lp.device), token_lp).cpu()


def _upper_prefix(
    split: LayerSplit, shared: _Shared, conditions: list[Steer], device: torch.device
) -> Tensor:
    """Blocks ``L+1..N`` for stacked conditions: ``(len(conditions), rows)`` sums."""
    assert shared.tails is not None and shared.owner is not None
    assert shared.tail_ids is not None and shared.tail_mask is not None
    assert shared.tail_positions is not None
    n = len(conditions)
    prompts = shared.states.shape[0]
    cache = _new_cache(split.model)
    split.upper(
        torch.cat([_steer(c, shared.states) for c in conditions]),
        shared.mask.repeat(n, 1).to(device),
        position_ids=shared.positions.repeat(n, 1).to(device),
        cache=cache,
    )
    owner = (torch.arange(n).unsqueeze(1) * prompts + shared.owner.unsqueeze(0)).reshape(-1)
    cache.batch_select_indices(owner.to(device))
    # Blocks 0..L are pass-through in the upper pass and never read their cache layers,
    # but the model sizes its attention masks from the cache's first full / sliding
    # layer, which may be one of them: give those layers the (shared) prompt lengths.
    for index in range(split.layer + 1):
        cache.layers[index] = shared.lower_cache.layers[index]
    hidden = split.upper(
        torch.cat([_steer(c, shared.tails) for c in conditions]),
        shared.tail_mask.repeat(n, 1).to(device),
        position_ids=shared.tail_positions.repeat(n, 1).to(device),
        cache=cache,
    )
    n_choice = torch.tensor([row.n_choice for row in shared.rows])
    length = shared.tail_ids.shape[1]
    # Position t of a tail predicts tail token t + 1, a choice token for t < n_choice.
    # Position 0 (the last prompt token) is the same for every option of a prompt: its
    # logits are computed once per prompt, the rest per row.
    predict = (torch.arange(length) >= 1).unsqueeze(0) & (
        torch.arange(length).unsqueeze(0) < n_choice.unsqueeze(1)
    )
    targets = torch.cat([shared.tail_ids[:, 1:], shared.tail_ids[:, :1]], dim=1)
    sums = _choice_logprob_sums(split, hidden, targets.repeat(n, 1), predict.repeat(n, 1))
    return (sums + _first_token_logprobs(split, hidden, shared, n)).view(n, len(shared.rows))


def _first_token_logprobs(split: LayerSplit, hidden: Tensor, shared: _Shared, n: int) -> Tensor:
    """``log p(first choice token)`` of every stacked row, the LM head run once per prompt."""
    assert shared.owner is not None and shared.tail_ids is not None
    rows, prompts = len(shared.rows), shared.states.shape[0]
    first = torch.zeros(prompts, dtype=torch.long)
    for r in reversed(range(rows)):
        first[int(shared.owner[r])] = r
    stacked = torch.arange(n).unsqueeze(1)
    representative = (stacked * rows + first.unsqueeze(0)).reshape(-1)  # (n * prompts,)
    device = hidden.device
    uses = (stacked * prompts + shared.owner.unsqueeze(0)).reshape(-1).to(device)
    wanted = shared.tail_ids[:, 1].repeat(n).to(device)
    states = hidden[representative.to(device), 0]
    out = torch.zeros(n * rows, dtype=torch.float32, device=device)
    for start in range(0, states.shape[0], HEAD_CHUNK):
        logits = split.logits(states[start : start + HEAD_CHUNK]).float()
        normaliser = torch.logsumexp(logits, dim=-1)
        here = (uses >= start) & (uses < start + HEAD_CHUNK)
        local = uses[here] - start
        out[here] = logits[local, wanted[here]] - normaliser[local]
    return out.cpu()


def _upper_whole(
    split: LayerSplit, shared: _Shared, conditions: list[Steer], device: torch.device
) -> Tensor:
    assert shared.ids is not None
    n = len(conditions)
    hidden = split.upper(
        torch.cat([_steer(c, shared.states) for c in conditions]),
        shared.mask.repeat(n, 1).to(device),
        position_ids=shared.positions.repeat(n, 1).to(device),
    )
    length = shared.ids.shape[1]
    n_choice = torch.tensor([row.n_choice for row in shared.rows])
    # Rows are left-padded: the choice is the last n_choice tokens, predicted from the
    # n_choice positions before them.
    offsets = torch.arange(length).unsqueeze(0)
    predict = (offsets >= length - 1 - n_choice.unsqueeze(1)) & (offsets < length - 1)
    targets = torch.cat([shared.ids[:, 1:], shared.ids[:, :1]], dim=1)
    sums = _choice_logprob_sums(split, hidden, targets.repeat(n, 1), predict.repeat(n, 1))
    return sums.view(n, len(shared.rows))


def _oracle_sums(
    model: nn.Module, shared: _Shared, condition: Steer, pad_id: int, device: torch.device
) -> list[float]:
    """The straightforward path's sums for one batch (for the exactness check)."""
    keep_ok = supports_logits_to_keep(model)
    with condition.apply(model):
        if shared.owner is None:
            return [float(x) for x in score_batch(model, shared.rows, pad_id, device, keep_ok)]
        groups: dict[int, list[ChoiceRow]] = {}
        for row in shared.rows:
            groups.setdefault(row.prompt_index, []).append(row)
        values = score_prompt_batch(model, list(groups.values()), pad_id, device, keep_ok)
    if values is None:
        raise _Unsplittable("its key/value cache cannot be gathered by row")
    return values


def _verify(
    model: nn.Module,
    split: LayerSplit,
    shared: _Shared,
    condition: Steer,
    fast: Tensor,
    pad_id: int,
    device: torch.device,
) -> None:
    """Compare the first batch with the straightforward path once per model and layer."""
    verdicts = _VERDICTS.setdefault(model, {})
    mode = (split.layer, shared.owner is not None)
    if mode not in verdicts:
        expected = torch.tensor(_oracle_sums(model, shared, condition, pad_id, device))
        diff = float((expected - fast).abs().max()) if expected.numel() else 0.0
        tolerance = 1e-3 if shared.states.dtype == torch.float32 else 0.25
        verdicts[mode] = math.isfinite(diff) and diff <= tolerance
        if not verdicts[mode]:
            logger.warning(
                "running only the blocks above layer %d of %s differs from the full forward "
                "by %.3g (> %g)",
                split.layer,
                type(model).__name__,
                diff,
                tolerance,
            )
    if not verdicts[mode]:
        raise _Unsplittable(f"the split does not reproduce {type(model).__name__}'s forward")


def _score_group(
    model: nn.Module,
    rows: list[ChoiceRow],
    pad_id: int,
    layer: int,
    conditions: list[Steer],
    *,
    batch_size: int,
    prefix_cache: bool,
    limit: int,
) -> list[tuple[dict[int, float], Throughput]]:
    """Sums and costs of every condition of one layer group, sharing blocks ``0..layer``."""
    try:
        split = LayerSplit(model, layer)
    except YapoError as error:
        raise _Unsplittable(str(error)) from error
    device = input_device(model)
    sums: list[dict[int, float]] = [{} for _ in conditions]
    stats = [Throughput() for _ in conditions]
    n = len(conditions)
    cached, whole = split_prefix_rows(rows, prefix_cache)
    work: list[tuple[Callable[[], _Shared], bool]] = [
        (partial(_lower_prefix, split, groups, pad_id, device), True)
        for groups in prompt_batches(cached, batch_size)
    ]
    work += [
        (partial(_lower_whole, split, batch, pad_id, device), False)
        for batch in row_batches(whole, batch_size)
    ]
    with torch.no_grad():
        for lower, prefix_mode in work:
            start = time.perf_counter()
            try:
                shared = lower()
            except (RuntimeError, TypeError, ValueError, IndexError, AttributeError) as error:
                raise _Unsplittable(f"{type(error).__name__}: {error}") from error
            lower_seconds = time.perf_counter() - start
            upper = _upper_prefix if prefix_mode else _upper_whole
            per_pass = max(1, limit // len(shared.rows))
            for first in range(0, n, per_pass):
                chunk = conditions[first : first + per_pass]
                start = time.perf_counter()
                try:
                    values = upper(split, shared, chunk, device)
                except (RuntimeError, TypeError, ValueError, IndexError, AttributeError) as error:
                    raise _Unsplittable(f"{type(error).__name__}: {error}") from error
                if first == 0:  # check a steered condition: the delta is tested too
                    k = next((i for i, c in enumerate(chunk) if _key(c) is not None), 0)
                    _verify(model, split, shared, chunk[k], values[k], pad_id, device)
                seconds = time.perf_counter() - start
                for c, row_values in enumerate(values.tolist(), start=first):
                    for row, value in zip(shared.rows, row_values):
                        sums[c][id(row)] = float(value)
                    stats[c].seconds += seconds / len(chunk) + lower_seconds / n
                    stats[c].forward_passes += 2 if prefix_mode else 1
                    stats[c].sequences += len(shared.rows)
                    stats[c].tokens += shared.tokens
    return list(zip(sums, stats))
