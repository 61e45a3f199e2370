"""General knowledge kept: MMLU-format multiple choice, unsteered vs steered.

The paper reports that steering leaves MMLU accuracy unchanged. This module runs that
check on local files with the built-in scorer: each question is laid out by
:func:`yapo.data.prompts.format_mcq_prompt` (lettered options, ``Answer:``), the letters are
scored with :func:`yapo.evaluate.scoring.score_choices`, and the highest wins — once
without steering and once per multiplier, so the *delta* is measured on the very same
questions (with its paired standard error). For the official harness numbers use the
lm-eval integration (:mod:`yapo.integrations.lm_eval`).

Accepted files (a folder is searched for all of them):

* the original MMLU CSVs (``data/test/<subject>_test.csv``): no header, columns
  ``question, A, B, C, D, answer-letter``; the subject comes from the file name;
* CSVs with a header ``question, A, B, C, D, answer`` (letter or 0-based index),
  optionally ``subject``;
* the Hugging Face ``cais/mmlu`` layout (JSONL/JSON/Parquet, or CSV): ``question``,
  ``choices`` (a list, or its JSON text), ``answer`` (0-based index or letter),
  optionally ``subject``.
"""

from __future__ import annotations

import csv
import json
import math
import re
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from torch import nn

from yapo.data.prompts import ANSWER_LETTERS, answer_letter, format_mcq_prompt, format_prompt
from yapo.data.validation import LoadReport
from yapo.errors import YapoError
from yapo.evaluate.conditions import score_conditions
from yapo.vectors.base import SteeringVector
from yapo.vectors.steer import Steer

SUFFIXES = (".csv", ".jsonl", ".json", ".parquet")
_SPLIT_SUFFIX = re.compile(r"_(test|dev|val|validation|train|auxiliary_train)$")


@dataclass(frozen=True)
class MmluQuestion:
    """One multiple-choice question with its subject."""

    id: str
    subject: str
    question: str
    choices: tuple[str, ...]
    answer: int


def _subject_from(path: Path) -> str:
    return _SPLIT_SUFFIX.sub("", path.stem)


def _answer(value: Any, n_choices: int) -> int:
    """An answer index from ``2``, ``"2"``, ``"C"``, ``"(C)"``."""
    if isinstance(value, bool):
        raise ValueError(f"answer {value!r} is not an index or a letter")
    if isinstance(value, int | float) and float(value).is_integer():
        index = int(value)
    else:
        text = str(value).strip().strip("().:").strip()
        if text.isdigit():
            index = int(text)
        elif len(text) == 1 and text.upper() in ANSWER_LETTERS:
            index = ANSWER_LETTERS.index(text.upper())
        else:
            raise ValueError(f"answer {value!r} is not an index or a letter")
    if not 0 <= index < n_choices:
        raise ValueError(f"answer {value!r} is out of range for {n_choices} choices")
    return index


def _choices(value: Any) -> list[str]:
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            raise ValueError("choices is text but not a JSON list") from None
    if hasattr(value, "tolist"):
        value = value.tolist()
    if not isinstance(value, list | tuple):
        raise ValueError(f"choices must be a list, got {type(value).__name__}")
    return [str(c) for c in value]


def _files(paths: Sequence[str | Path]) -> list[Path]:
    found: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            found.extend(sorted(p for p in path.rglob("*") if p.suffix.lower() in SUFFIXES))
        elif path.is_file():
            found.append(path)
        else:
            raise YapoError(f"MMLU file or folder not found: {path}")
    if not found:
        raise YapoError(f"no MMLU files ({', '.join(SUFFIXES)}) in {[str(p) for p in paths]}")
    return found


def _csv_rows(path: Path) -> tuple[list[tuple[str, dict[str, Any]]], list[str]]:
    """Rows as dicts (``question``, ``A``.., ``answer``) from headed or headerless CSVs."""
    with open(path, newline="", encoding="utf-8") as handle:
        rows = list(csv.reader(handle))
    if not rows:
        return [], []
    first = [cell.strip() for cell in rows[0]]
    lowered = [cell.lower() for cell in first]
    if "question" in lowered and ("answer" in lowered or "choices" in lowered):
        names = [c if c.upper() in ANSWER_LETTERS and len(c) == 1 else c.lower() for c in first]
        body, start = rows[1:], 2
    else:  # the original headerless MMLU layout
        n = len(first)
        if n < 4:
            raise YapoError(f"{path}: a headerless MMLU CSV needs question, ≥2 options, answer")
        names = ["question", *ANSWER_LETTERS[: n - 2], "answer"]
        body, start = rows, 1
    out = []
    for offset, row in enumerate(body):
        if not any(cell.strip() for cell in row):
            continue
        out.append((f"{path.name}:{start + offset}", dict(zip(names, row))))
    return out, names


def _table_rows(path: Path) -> tuple[list[tuple[str, dict[str, Any]]], list[str]]:
    from yapo.data.files import read_table

    table = read_table(str(path))
    return [(row.location, row.data) for row in table.rows], list(table.columns)


def load_mmlu(paths: str | Path | Sequence[str | Path]) -> tuple[list[MmluQuestion], LoadReport]:
    """Questions from MMLU-format files (see the module docstring), with a load report."""
    if isinstance(paths, str | Path):
        paths = [paths]
    files = _files(paths)
    report = LoadReport(source=", ".join(str(p) for p in paths))
    questions: list[MmluQuestion] = []
    for path in files:
        reader = _csv_rows if path.suffix.lower() == ".csv" else _table_rows
        rows, columns = reader(path)
        letters = [c for c in columns if len(c) == 1 and c in ANSWER_LETTERS]
        if "choices" not in columns and len(letters) < 2:
            raise YapoError(
                f"{path}: expected MMLU columns question, A, B, C, D, answer (or question, "
                f"choices, answer); found {columns}"
            )
        for location, row in rows:
            question = str(row.get("question") or "").strip()
            try:
                if "choices" in row:
                    choices = _choices(row["choices"])
                else:
                    choices = [str(row.get(letter) or "").strip() for letter in letters]
                if len(choices) < 2:
                    raise ValueError(f"{len(choices)} choice(s); at least two are needed")
                answer = _answer(row.get("answer"), len(choices))
            except ValueError as exc:
                report.bad(location, str(exc))
                continue
            if not question or not all(c.strip() for c in choices):
                report.empty(location, "empty question or choice")
                continue
            subject = str(row.get("subject") or "").strip() or _subject_from(path)
            questions.append(
                MmluQuestion(
                    id=location,
                    subject=subject,
                    question=question,
                    choices=tuple(c.strip() for c in choices),
                    answer=answer,
                )
            )
            report.kept()
    if not questions:
        raise YapoError(f"no usable MMLU questions\n{report.summary()}")
    return questions, report


# ------------------------------------------------------------------ run
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
