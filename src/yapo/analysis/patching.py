"""Activation patching: at which layer does the named country reach the answer?

The paper picks its steering layer this way (appendix): run the *localized* prompt (the
country is named), take the residual-stream state of its last token at layer ``j``, put
it in place of the last token's state in the *non-localized* run (country omitted) at
the same layer, finish that run, and read the probability of the culturally correct
option and of the Western default option. Repeated for every layer, this gives a curve:
where patching already moves the answer toward the localized one, the information that
steering must supply is carried by the last token at that layer.

Reading the curve: patching at the last block hands over the localized run's final
state itself, so with one-token answers (letters) the last point equals the localized
run; early layers carry little beyond the token itself and stay near the non-localized
run. The interesting points are where the curve rises. Two summaries are reported:
``best_layer`` (largest mean ``P(correct) - P(Western)``, or ``P(correct)`` when items
have no Western option) and ``first_recovering_layer`` (earliest layer that recovers at
least half of the localized-minus-non-localized gap of that quantity) — usually the
better steering layer.

What is scored is what the MCQ evaluation scores (:mod:`yapo.evaluate.mcq`, tokenized
by :func:`yapo.evaluate.scoring.encode_pair`): each option's continuation after the
prompt — the answer letter (``choices="letter"``) or the option text
(``choices="text"``, cloze style, right for small base models that do not follow the
lettered layout) — its log-probability summed over its tokens (or averaged with
``normalize``), renormalised over the options. The patched position is the prompt's
last token; the option tokens that follow it see the patched state through attention.
``option_mass`` (how much probability the options hold in total) is kept as a sanity
check: a model that puts 1% of its mass on the letters is guessing.

Cost: patching changes only the prompt's last position (and what follows it) from layer
``j`` on, so the non-localized prompt minus its last token is run *once* with a
key/value cache; the last token and the option tokens are then run for every (layer,
option) at once, as rows over the repeated cache (row group 0 unpatched, group ``k``
patched at the ``k``-th layer), in chunks that keep the logits under ``max_logits``
floats. ``use_cache=False`` runs the whole prompt in every row instead (the
straightforward form, kept as the test oracle).
"""

from __future__ import annotations

import contextlib
import copy
import math
import operator
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor, nn

from yapo._io import write_json
from yapo.data.records import CulturalMCQ
from yapo.errors import YapoError
from yapo.evaluate.scoring import encode_pair
from yapo.intervene import (
    cache_argument,
    input_device,
    record_states,
    replace_state,
    supports_logits_to_keep,
)
from yapo.models.layers import num_layers, resolve_layer
from yapo.report.patching import plot_patching

RECOVERY_THRESHOLD = 0.5
MAX_LOGITS = 2**26  # floats of logits held at once (256 MiB)
ChoiceFormat = Literal["letter", "text"]


@dataclass(frozen=True)
class PatchPair:
    """One item: the prompt to patch from, the prompt to patch into, and its options.

    ``choices`` are the continuations scored after each prompt (for an MCQ, the answer
    letters ``"A"``, ``"B"``, ... or the option texts ``" Ful medames"``); ``correct``
    indexes the culturally correct one and ``western`` the Western default (``None`` if
    absent).
    """

    source: str
    target: str
    choices: tuple[str, ...]
    correct: int
    western: int | None = None
    id: str = ""

    def __post_init__(self) -> None:
        if len(self.choices) < 2:
            raise YapoError(f"item {self.id or '?'}: patching needs at least two choices")
        for name, index in (("correct", self.correct), ("western", self.western)):
            if index is not None and not 0 <= index < len(self.choices):
                raise YapoError(
                    f"item {self.id or '?'}: {name} index {index} is out of range for "
                    f"{len(self.choices)} choices"
                )


@dataclass
class PatchOutputs:
    """Raw output of a batch of patched runs: summed log-probs of each option.

    ``source``/``target``: ``(B, n_options)`` in the unpatched localized and
    non-localized runs; ``patched``: ``(B, n_layers, n_options)`` in the non-localized run
    patched at each layer. Items with fewer options are padded with ``-inf``.
    ``lengths``: ``(B, n_options)`` token counts of the options (for normalisation).
    With ``keep_states=True``: ``patched_states`` is the patched position's state after
    every block in each patched run, ``(B, n_layers, n_blocks, d)`` (read from the first
    option's row), and ``source_states`` the localized run's, ``(B, n_blocks, d)``.
    """

    source: Tensor
    target: Tensor
    patched: Tensor
    lengths: Tensor
    patched_states: Tensor | None = None
    source_states: Tensor | None = None


# ------------------------------------------------------------------ tokens
def encode_prompt_options(
    tokenizer: Any, prompt: str, choices: Sequence[str]
) -> tuple[list[int], list[list[int]]]:
    """The prompt's token ids and each choice's token ids, split as the MCQ scorer splits them."""
    context: list[int] | None = None
    options: list[list[int]] = []
    for choice in choices:
        ids, n_choice = encode_pair(tokenizer, prompt, choice)
        here = ids[: len(ids) - n_choice]
        if context is None:
            context = here
        if here != context:
            # A merge across the prompt/choice boundary: read the choice on its own.
            options.append(
                [int(i) for i in tokenizer(choice, add_special_tokens=False)["input_ids"]]
            )
        else:
            options.append([int(i) for i in ids[len(here) :]])
    assert context is not None
    if len({tuple(o) for o in options}) != len(options):
        raise YapoError(
            f"the choices {list(choices)} tokenize to the same tokens, so their "
            "probabilities cannot be told apart"
        )
    if len(context) < 2:
        raise YapoError(
            f"the prompt {prompt!r} is a single token; patching needs a context before the "
            "last token"
        )
    return [int(i) for i in context], options


# ------------------------------------------------------------- forwards
def _vocab_size(model: nn.Module) -> int:
    head = getattr(model, "get_output_embeddings", lambda: None)()
    weight = getattr(head, "weight", None)
    return int(weight.shape[0]) if isinstance(weight, Tensor) else 65536


def _right_pad(rows: Sequence[Sequence[int]], pad_id: int) -> tuple[Tensor, Tensor]:
    length = max(len(r) for r in rows)
    ids = torch.full((len(rows), length), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), length), dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = torch.tensor(list(row), dtype=torch.long)
        mask[i, : len(row)] = 1
    return ids, mask


def _continuation_scores(
    model: nn.Module,
    chunk: Tensor,
    chunk_mask: Tensor,
    options: Sequence[Sequence[int]],
    *,
    past: Any = None,
    prefix_length: int = 0,
) -> Tensor:
    """Summed log-probs of ``options[i]`` in row ``i``; ``chunk`` is ``[last, *option, pad..]``.

    Without ``past`` the chunk rows are whole sequences whose last prompt token sits at
    column ``prefix_length``; with it, the chunk continues the cached prefix.
    """
    device = input_device(model)
    width = chunk.shape[1]
    keep = width - prefix_length if past is None else width
    if past is None:
        mask = chunk_mask
        positions = torch.arange(width).expand(chunk.shape[0], -1)
    else:
        mask = torch.cat(
            [torch.ones(chunk.shape[0], prefix_length, dtype=torch.long), chunk_mask], 1
        )
        positions = torch.arange(prefix_length, prefix_length + width).expand(chunk.shape[0], -1)
    kwargs: dict[str, Any] = {
        "input_ids": chunk.to(device),
        "attention_mask": mask.to(device),
        "position_ids": positions.to(device),
        "use_cache": past is not None,
    }
    if past is not None:
        kwargs[cache_argument(model)] = past
    if supports_logits_to_keep(model):
        kwargs["logits_to_keep"] = keep
    logits = model(**kwargs).logits[:, -keep:]
    scores = torch.zeros(chunk.shape[0])
    for i, option in enumerate(options):
        lp = torch.log_softmax(logits[i, : len(option)].float(), -1)
        target = torch.tensor(option, device=lp.device)
        scores[i] = lp.gather(-1, target.unsqueeze(-1)).sum().cpu()
    return scores


def _source_run(
    model: nn.Module, context: list[int], options: list[list[int]], pad_id: int
) -> tuple[Tensor, Tensor]:
    """The localized run: every block's state at the prompt's last token, and option scores."""
    chunk, mask = _right_pad([context + o for o in options], pad_id)
    with record_states(model, len(context) - 1) as recorded:
        scores = _continuation_scores(model, chunk, mask, options, prefix_length=len(context) - 1)
    return torch.stack([r[0] for r in recorded]), scores


def _target_runs(
    model: nn.Module,
    context: list[int],
    options: list[list[int]],
    blocks: Sequence[int],
    values: Tensor,
    pad_id: int,
    use_cache: bool,
    keep_states: bool,
    max_logits: int,
) -> tuple[Tensor, Tensor | None]:
    """Scores ``(1 + n_layers, n_options)``: unpatched, then patched at each block."""
    groups = len(blocks) + 1
    jobs = [(g, k) for g in range(groups) for k in range(len(options))]
    longest = max(len(o) for o in options)
    per_row = (longest + 1) * _vocab_size(model)
    rows_per_chunk = max(1, max_logits // per_row)
    scores = torch.full((groups, len(options)), -math.inf)
    states = torch.zeros(0)
    if keep_states:
        states = torch.zeros(len(blocks), num_layers(model), values.shape[-1])
    cache = None
    if use_cache:
        device = input_device(model)
        prefix = torch.tensor([context[:-1]], device=device)
        cache = model(input_ids=prefix, use_cache=True).past_key_values
        if not hasattr(cache, "batch_repeat_interleave"):
            raise YapoError(
                f"{type(model).__name__} returns a {type(cache).__name__} cache that cannot "
                "be repeated per layer; use use_cache=False"
            )
    column = 0 if use_cache else len(context) - 1
    for start in range(0, len(jobs), rows_per_chunk):
        part = jobs[start : start + rows_per_chunk]
        tails = [options[k] for _, k in part]
        sequences = [[context[-1], *t] if use_cache else [*context, *t] for t in tails]
        chunk, mask = _right_pad(sequences, pad_id)
        past = None
        if cache is not None:
            past = copy.deepcopy(cache)
            past.batch_repeat_interleave(len(part))
        with contextlib.ExitStack() as stack:
            for index, block in enumerate(blocks):
                rows = [r for r, (g, _) in enumerate(part) if g == index + 1]
                if rows:
                    stack.enter_context(
                        replace_state(
                            model,
                            block,
                            torch.tensor(rows),
                            column,
                            values[index].expand(len(rows), -1),
                        )
                    )
            recorded = stack.enter_context(record_states(model, column)) if keep_states else []
            chunk_scores = _continuation_scores(
                model,
                chunk,
                mask,
                tails,
                past=past,
                prefix_length=len(context) - 1,
            )
        for r, (g, k) in enumerate(part):
            scores[g, k] = chunk_scores[r]
            if keep_states and g > 0 and k == 0:
                states[g - 1] = (
                    torch.stack([block_states[r] for block_states in recorded]).float().cpu()
                )
    return scores, (states if keep_states else None)


def patch_last_token(
    model: nn.Module,
    tokenizer: Any,
    sources: Sequence[Sequence[int]],
    targets: Sequence[Sequence[int]],
    source_options: Sequence[Sequence[Sequence[int]]],
    target_options: Sequence[Sequence[Sequence[int]]],
    layers: Sequence[int],
    *,
    use_cache: bool = True,
    keep_states: bool = False,
    max_logits: int = MAX_LOGITS,
) -> PatchOutputs:
    """Patch each source's last-token state into its target at each layer (token ids in).

    ``sources``/``targets`` are prompt token ids (BOS included); ``*_options[i]`` are the
    token ids of item ``i``'s choices after each prompt. See the module docstring.
    """
    n_items = len(sources)
    if not (n_items == len(targets) == len(source_options) == len(target_options)):
        raise YapoError("sources, targets and their options must have the same length")
    if not n_items:
        raise YapoError("nothing to patch: no items")
    if any(len(t) < 2 for t in targets) or any(len(s) < 1 for s in sources):
        raise YapoError("every target prompt needs at least two tokens")
    for a, b in zip(source_options, target_options):
        if len(a) != len(b) or not a or any(not o for o in [*a, *b]):
            raise YapoError("every item needs the same non-empty choices after both prompts")
    blocks = [resolve_layer(model, layer) for layer in layers]
    if len(set(blocks)) != len(blocks):
        raise YapoError(f"layers {list(layers)} name some block twice")
    width = max(len(o) for o in target_options)
    pad_id = getattr(tokenizer, "pad_token_id", None)
    pad_id = int(pad_id) if pad_id is not None else 0
    source_scores = torch.full((n_items, width), -math.inf)
    target_scores = torch.full((n_items, width), -math.inf)
    patched = torch.full((n_items, len(blocks), width), -math.inf)
    lengths = torch.zeros((n_items, width), dtype=torch.long)
    patched_states, source_states = [], []
    with torch.no_grad():
        for i in range(n_items):
            states, scores = _source_run(
                model, list(sources[i]), [list(o) for o in source_options[i]], pad_id
            )
            n = len(target_options[i])
            source_scores[i, :n] = scores
            lengths[i, :n] = torch.tensor([len(o) for o in target_options[i]])
            target, kept = _target_runs(
                model,
                list(targets[i]),
                [list(o) for o in target_options[i]],
                blocks,
                states[blocks],
                pad_id,
                use_cache,
                keep_states,
                max_logits,
            )
            target_scores[i, :n] = target[0]
            patched[i, :, :n] = target[1:]
            if keep_states:
                source_states.append(states.float().cpu())
                patched_states.append(kept)
    return PatchOutputs(
        source=source_scores,
        target=target_scores,
        patched=patched,
        lengths=lengths,
        patched_states=torch.stack(patched_states) if keep_states else None,  # type: ignore[arg-type]
        source_states=torch.stack(source_states) if keep_states else None,
    )


# ----------------------------------------------------------------- results
@dataclass
class Probabilities:
    """Option probabilities (renormalised over the options) read from one run."""

    correct: float
    western: float | None
    top: int
    option_mass: float


def _read(
    log_probs: Tensor, lengths: Tensor, pair: PatchPair, normalize: bool = False
) -> Probabilities:
    n = len(pair.choices)
    lp = log_probs[:n]
    weights = lp / lengths[:n].clamp(min=1) if normalize else lp
    probs = torch.softmax(weights, -1)
    return Probabilities(
        correct=float(probs[pair.correct]),
        western=None if pair.western is None else float(probs[pair.western]),
        top=int(probs.argmax()),
        option_mass=float(lp.exp().sum()),
    )


@dataclass
class ItemPatching:
    """One item's probabilities: unpatched localized/non-localized, and per layer."""

    id: str
    localized: Probabilities
    nonlocalized: Probabilities
    patched: list[Probabilities]


@dataclass
class CurvePoint:
    """Means over items at one layer (or one unpatched run)."""

    p_correct: float
    p_western: float | None
    accuracy: float
    western_rate: float | None
    option_mass: float

    @property
    def effect(self) -> float:
        """``P(correct) - P(Western)``, or ``P(correct)`` when there is no Western option."""
        return self.p_correct - (self.p_western or 0.0)


def _mean(values: Sequence[float]) -> float:
    return float(sum(values) / len(values)) if values else math.nan


def _point(
    items: Sequence[ItemPatching],
    pairs: Sequence[PatchPair],
    pick: Callable[[Any], Probabilities],
    patched: bool = False,
) -> CurvePoint:
    """Means over items of ``pick(item)`` (``pick(item.patched)`` with ``patched``)."""
    chosen = [pick(item.patched if patched else item) for item in items]
    western = [p.western for p in chosen if p.western is not None]
    with_western = [(p, pair) for p, pair in zip(chosen, pairs) if pair.western is not None]
    return CurvePoint(
        p_correct=_mean([p.correct for p in chosen]),
        p_western=_mean(western) if western else None,
        accuracy=_mean([float(p.top == pair.correct) for p, pair in zip(chosen, pairs)]),
        western_rate=(
            _mean([float(p.top == pair.western) for p, pair in with_western])
            if with_western
            else None
        ),
        option_mass=_mean([p.option_mass for p in chosen]),
    )


@dataclass
class PatchingResult:
    """The per-layer curve, its unpatched ends, the chosen layers, and every item."""

    layers: list[int]
    curve: list[CurvePoint]
    localized: CurvePoint
    nonlocalized: CurvePoint
    items: list[ItemPatching]
    n_blocks: int
    seconds: float = 0.0
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def best_layer(self) -> int:
        """Layer with the largest mean ``P(correct) - P(Western)`` (earliest on ties)."""
        effects = [point.effect for point in self.curve]
        return self.layers[max(range(len(effects)), key=lambda i: (effects[i], -i))]

    @property
    def first_recovering_layer(self) -> int | None:
        """Earliest layer recovering ``RECOVERY_THRESHOLD`` of the localization gap, if any."""
        low, high = self.nonlocalized.effect, self.localized.effect
        if not high > low:
            return None
        for layer, point in zip(self.layers, self.curve):
            if (point.effect - low) / (high - low) >= RECOVERY_THRESHOLD:
                return layer
        return None

    def to_json(self) -> dict[str, Any]:
        def point(p: CurvePoint) -> dict[str, Any]:
            return {**asdict(p), "effect": p.effect}

        return {
            "layers": self.layers,
            "n_blocks": self.n_blocks,
            "n_items": len(self.items),
            "best_layer": self.best_layer,
            "first_recovering_layer": self.first_recovering_layer,
            "recovery_threshold": RECOVERY_THRESHOLD,
            "localized": point(self.localized),
            "nonlocalized": point(self.nonlocalized),
            "curve": [{"layer": layer, **point(p)} for layer, p in zip(self.layers, self.curve)],
            "seconds": round(self.seconds, 2),
            "metadata": self.metadata,
            "items": [asdict(item) for item in self.items],
        }

    def summary(self) -> str:
        """A few lines for the terminal."""
        lines = [
            f"{len(self.items)} items, {len(self.layers)} layers, {self.seconds:.1f}s",
            f"unpatched localized:     P(correct)={self.localized.p_correct:.3f}"
            + _western_text(self.localized),
            f"unpatched non-localized: P(correct)={self.nonlocalized.p_correct:.3f}"
            + _western_text(self.nonlocalized),
        ]
        for layer, p in zip(self.layers, self.curve):
            lines.append(f"  layer {layer:>3}: P(correct)={p.p_correct:.3f}" + _western_text(p))
        lines.append(f"best layer: {self.best_layer}")
        first = self.first_recovering_layer
        lines.append(
            f"first layer recovering {RECOVERY_THRESHOLD:.0%} of the localization gap: "
            + (str(first) if first is not None else "none (no localization gap)")
        )
        return "\n".join(lines)


def _western_text(p: CurvePoint) -> str:
    return "" if p.p_western is None else f"  P(Western)={p.p_western:.3f}"


def patch_layers(
    model: nn.Module,
    tokenizer: Any,
    pairs: Sequence[PatchPair],
    *,
    layers: Sequence[int] | None = None,
    batch_size: int = 4,
    normalize: bool = False,
    use_cache: bool = True,
    max_logits: int = MAX_LOGITS,
    progress: bool = False,
) -> PatchingResult:
    """Run the patching experiment on ``pairs`` for ``layers`` (default: every block).

    ``normalize`` renormalises per-token mean log-probabilities instead of sums (as the
    MCQ scorer's ``normalize``); ``batch_size`` items are handed to
    :func:`patch_last_token` at a time.
    """
    if not pairs:
        raise YapoError("no items to patch")
    if batch_size < 1:
        raise YapoError(f"batch_size must be at least 1, got {batch_size}")
    n_blocks = num_layers(model)
    chosen = [
        resolve_layer(model, layer) for layer in (layers if layers is not None else range(n_blocks))
    ]
    encoded = []
    for pair in pairs:
        source, source_options = encode_prompt_options(tokenizer, pair.source, pair.choices)
        target, target_options = encode_prompt_options(tokenizer, pair.target, pair.choices)
        encoded.append((source, target, source_options, target_options))
    items: list[ItemPatching] = []
    start = time.perf_counter()
    batches = range(0, len(pairs), batch_size)
    if progress:
        from tqdm import tqdm

        batches = tqdm(batches, desc="patching", unit="batch")  # type: ignore[assignment]
    for begin in batches:
        chunk = encoded[begin : begin + batch_size]
        out = patch_last_token(
            model,
            tokenizer,
            [c[0] for c in chunk],
            [c[1] for c in chunk],
            [c[2] for c in chunk],
            [c[3] for c in chunk],
            chosen,
            use_cache=use_cache,
            max_logits=max_logits,
        )
        for i, pair in enumerate(pairs[begin : begin + batch_size]):
            items.append(
                ItemPatching(
                    id=pair.id or str(begin + i),
                    localized=_read(out.source[i], out.lengths[i], pair, normalize),
                    nonlocalized=_read(out.target[i], out.lengths[i], pair, normalize),
                    patched=[
                        _read(out.patched[i, k], out.lengths[i], pair, normalize)
                        for k in range(len(chosen))
                    ],
                )
            )
    seconds = time.perf_counter() - start
    return PatchingResult(
        layers=chosen,
        curve=[
            _point(items, pairs, operator.itemgetter(k), patched=True) for k in range(len(chosen))
        ],
        localized=_point(items, pairs, operator.attrgetter("localized")),
        nonlocalized=_point(items, pairs, operator.attrgetter("nonlocalized")),
        items=items,
        n_blocks=n_blocks,
        seconds=seconds,
    )


def pairs_from_mcqs(
    tokenizer: Any,
    items: Sequence[CulturalMCQ],
    chat: bool | Literal["auto"] = "auto",
    choices: ChoiceFormat = "text",
) -> list[PatchPair]:
    """Localized → non-localized pairs laid out exactly as the MCQ scorer asks them.

    The prompt text and the continuations (answer letters, or ``" " + option text``) are
    those of :func:`yapo.evaluate.mcq.run_mcq` in ``loglik`` mode with the same
    ``choices``, so the curve's end points are the MCQ evaluation's own probabilities.
    """
    if choices not in ("letter", "text"):
        raise YapoError(f"choices must be 'letter' or 'text', got {choices!r}")
    from yapo.data.prompts import answer_letter, format_prompt
    from yapo.evaluate.mcq import mcq_text

    pairs = []
    for item in items:
        source, target = (
            format_prompt(tokenizer, mcq_text(item, setting, "loglik"), chat=chat)
            for setting in ("localized", "nonlocalized")
        )
        pairs.append(
            PatchPair(
                source=source,
                target=target,
                choices=tuple(
                    answer_letter(i) if choices == "letter" else " " + option.strip()
                    for i, option in enumerate(item.options)
                ),
                correct=item.answer,
                western=item.western_index,
                id=item.id,
            )
        )
    return pairs


# -------------------------------------------------------------------- output
def save_patching(
    result: PatchingResult, folder: str | Path, title: str | None = None
) -> dict[str, Path]:
    """Write ``patching.json`` and ``patching.png`` into ``folder``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    json_path = folder / "patching.json"
    write_json(json_path, result.to_json())
    png_path = plot_patching(result, folder / "patching.png", title=title)
    return {"json": json_path, "png": png_path}
