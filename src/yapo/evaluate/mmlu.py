"""General knowledge kept: MMLU-format multiple choice, unsteered vs steered.

The paper reports that steering leaves MMLU accuracy unchanged. This module runs that
check on local files with the built-in scorer: each question is laid out by
:func:`yapo.data.prompts.format_mcq_prompt` (lettered options, ``Answer:``), the letters are
scored with :func:`yapo.evaluate.scoring.score_choices`, and the highest wins — once
without steering and once per multiplier, so the *delta* is measured on the very same
questions (with its paired standard error). For the official harness numbers use the
lm-eval integration (:mod:`yapo.integrations.lm_eval`).

The questions come from :func:`yapo.data.mmlu.load_mmlu`.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from torch import nn

from yapo.data.mmlu import MmluQuestion
from yapo.data.prompts import answer_letter, format_mcq_prompt, format_prompt
from yapo.errors import YapoError
from yapo.evaluate.conditions import score_conditions
from yapo.vectors.base import SteeringVector
from yapo.vectors.steer import Steer


def mmlu_prompt(question: MmluQuestion, examples: Sequence[MmluQuestion] = ()) -> str:
    """The question as an MCQ, after ``examples`` answered in the same layout (few-shot)."""
    parts = []
    if examples:
        subject = question.subject.replace("_", " ")
        parts.append(f"The following are multiple choice questions (with answers) about {subject}.")
        for example in examples:
            text = format_mcq_prompt(example.question, example.choices)
            parts.append(f"{text} {answer_letter(example.answer)}")
    parts.append(format_mcq_prompt(question.question, question.choices))
    return "\n\n".join(parts)


@dataclass
class MmluCondition:
    """Accuracy at one multiplier (0 = unsteered), and its change from unsteered."""

    multiplier: float
    accuracy: float
    n: int
    per_subject: dict[str, float]
    delta: float = 0.0
    delta_se: float = 0.0
    flips_to_correct: int = 0
    flips_to_wrong: int = 0
    predictions: list[int] = field(default_factory=list)


@dataclass
class MmluResult:
    """Unsteered and steered MMLU accuracy on the same questions."""

    conditions: list[MmluCondition]
    subjects: dict[str, int]
    shots: int = 0
    metadata: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "conditions": [asdict(c) for c in self.conditions],
            "subjects": self.subjects,
            "shots": self.shots,
            "metadata": self.metadata,
        }

    def summary(self) -> str:
        n = self.conditions[0].n if self.conditions else 0
        lines = [f"MMLU-format: {n} questions, {len(self.subjects)} subjects, {self.shots}-shot"]
        for c in self.conditions:
            label = "unsteered" if c.multiplier == 0 else f"λ={c.multiplier:g}"
            delta = (
                ""
                if c.multiplier == 0
                else f"  Δ={c.delta:+.4f} ± {c.delta_se:.4f} (+{c.flips_to_correct}/-{c.flips_to_wrong})"
            )
            lines.append(f"{label:>10}: accuracy {c.accuracy:.4f}{delta}")
        return "\n".join(lines)


def run_mmlu(
    model: nn.Module,
    tokenizer: Any,
    questions: Sequence[MmluQuestion],
    *,
    vector: SteeringVector | None = None,
    multipliers: Sequence[float] = (1.0,),
    direction: int = 1,
    shots: int = 0,
    dev: Sequence[MmluQuestion] | None = None,
    chat: bool | Literal["auto"] = "auto",
    batch_size: int = 16,
    shared_lower: bool = True,
) -> MmluResult:
    """Accuracy unsteered and at each multiplier; ``shots`` examples per subject from ``dev``.

    Few-shot examples come from ``dev`` (the same subject), or, without ``dev``, from the
    other questions of the same subject (never the question itself). All multipliers
    share one pass of the blocks below the vector's layer (``shared_lower=False``: the
    whole model per multiplier).
    """
    if not questions:
        raise YapoError("no MMLU questions to evaluate")
    if shots < 0:
        raise YapoError(f"shots must be >= 0, got {shots}")
    by_subject: dict[str, list[MmluQuestion]] = defaultdict(list)
    for q in dev if dev is not None else questions:
        by_subject[q.subject].append(q)
    prompts = []
    for q in questions:
        pool = [e for e in by_subject.get(q.subject, []) if e.id != q.id][:shots]
        if len(pool) < shots:
            raise YapoError(
                f"{shots}-shot needs {shots} other questions of subject {q.subject!r}; "
                f"found {len(pool)}"
            )
        prompts.append(format_prompt(tokenizer, mmlu_prompt(q, pool), chat=chat))
    letters = [[answer_letter(i) for i in range(len(q.choices))] for q in questions]
    wanted = [0.0] + [float(m) for m in multipliers if float(m) != 0.0] if vector else [0.0]
    grid = list(dict.fromkeys(wanted))
    scored = score_conditions(
        model,
        tokenizer,
        prompts,
        letters,
        [Steer(vector, m, direction) for m in grid],
        batch_size=batch_size,
        shared_lower=shared_lower,
    )
    conditions: list[MmluCondition] = []
    for multiplier, result in zip(grid, scored):
        predictions = [max(range(len(row)), key=row.__getitem__) for row in result.scores]
        conditions.append(_condition(questions, multiplier, predictions))
    base = conditions[0]
    for condition in conditions[1:]:
        _compare(condition, base, questions)
    subjects: dict[str, int] = defaultdict(int)
    for q in questions:
        subjects[q.subject] += 1
    return MmluResult(conditions=conditions, subjects=dict(subjects), shots=shots)


def _condition(
    questions: Sequence[MmluQuestion], multiplier: float, predictions: list[int]
) -> MmluCondition:
    right: dict[str, list[float]] = defaultdict(list)
    for q, p in zip(questions, predictions):
        right[q.subject].append(float(p == q.answer))
    correct = [float(p == q.answer) for q, p in zip(questions, predictions)]
    return MmluCondition(
        multiplier=float(multiplier),
        accuracy=sum(correct) / len(correct),
        n=len(correct),
        per_subject={s: sum(v) / len(v) for s, v in sorted(right.items())},
        predictions=predictions,
    )


def _compare(
    condition: MmluCondition, base: MmluCondition, questions: Sequence[MmluQuestion]
) -> None:
    """Paired change from the unsteered run: Δ accuracy, its standard error, flips."""
    diffs = [
        float(p == q.answer) - float(b == q.answer)
        for q, p, b in zip(questions, condition.predictions, base.predictions)
    ]
    n = len(diffs)
    mean = sum(diffs) / n
    variance = sum((d - mean) ** 2 for d in diffs) / (n - 1) if n > 1 else 0.0
    condition.delta = mean
    condition.delta_se = math.sqrt(variance / n)
    condition.flips_to_correct = sum(1 for d in diffs if d > 0)
    condition.flips_to_wrong = sum(1 for d in diffs if d < 0)
