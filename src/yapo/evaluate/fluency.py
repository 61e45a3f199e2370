"""How fluent steered text is: the unsteered model's surprise at it, and its repetition.

Strength costs fluency: a vector strong enough to move answers can also make the model
loop ("face masks face masks ...") or drift into word salad. Choosing λ by accuracy alone
would happily pick such a λ, so the selection (:mod:`yapo.evaluate.selection`) also
generates a few greedy continuations at each λ and measures

* ``nll``: the *unsteered* model's mean negative log-likelihood per token of the steered
  continuation (a fluent text is unsurprising to the model that was not steered), and
  ``nll_increase`` over the unsteered model's own continuations of the same prompts;
* ``repetition``: the share of the continuation's token 4-grams that repeat an earlier
  4-gram of the same continuation (0 for ordinary text, close to 1 for a loop).

An empty continuation (the model emits end-of-text at once) counts as not fluent: it is
what a broken vector produces.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from torch import nn

from yapo.vectors.steer import UNSTEERED, Steer

NGRAM = 4


def repetition_rate(tokens: Sequence[int], n: int = NGRAM) -> float:
    """Share of the ``n``-grams of ``tokens`` that already occurred earlier in it."""
    grams = [tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]
    if not grams:
        return 0.0
    seen: set[tuple[int, ...]] = set()
    repeated = 0
    for gram in grams:
        if gram in seen:
            repeated += 1
        seen.add(gram)
    return repeated / len(grams)


@dataclass
class Fluency:
    """Fluency of one condition's continuations (means over the prompts)."""

    nll: float  # unsteered NLL per token of the continuations (inf: all empty)
    repetition: float
    empty: int
    samples: list[str]

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def measure_fluency(
    model: nn.Module,
    tokenizer: Any,
    prompts: Sequence[str],
    *,
    steer: Steer = UNSTEERED,
    max_new_tokens: int = 24,
    batch_size: int = 8,
) -> Fluency:
    """Greedy continuations of ``prompts`` under the steering, scored unsteered."""
    from yapo.evaluate.scoring import score_choices
    from yapo.evaluate.textgen import generate_texts

    outputs, _ = generate_texts(
        model,
        tokenizer,
        prompts,
        steer=steer,
        max_new_tokens=max_new_tokens,
        batch_size=batch_size,
    )
    kept = [(p, o) for p, o in zip(prompts, outputs) if o.strip()]
    empty = len(outputs) - len(kept)
    if not kept:
        return Fluency(math.inf, 0.0, empty, list(outputs))
    scores = score_choices(
        model,
        tokenizer,
        [p for p, _ in kept],
        [[o] for _, o in kept],
        batch_size=batch_size,
        normalize=True,
    )
    nll = -sum(row[0] for row in scores) / len(scores)
    repetition = sum(
        repetition_rate(tokenizer(o, add_special_tokens=False)["input_ids"]) for _, o in kept
    ) / len(kept)
    # empty continuations weigh as the worst case of repetition
    repetition = (repetition * len(kept) + empty) / len(outputs)
    return Fluency(nll, repetition, empty, list(outputs))
