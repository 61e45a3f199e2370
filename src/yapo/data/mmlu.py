"""MMLU-format questions from local files, for :mod:`yapo.evaluate.mmlu`.

Accepted files (a folder is searched for all of them):

* the original MMLU CSVs (``data/test/<subject>_test.csv``): no header, columns
  ``question, A, B, C, D, answer-letter``; the subject comes from the file name;
* CSVs with a header ``question, A, B, C, D, answer`` (letter or 0-based index),
  optionally ``subject``;
* the Hugging Face ``cais/mmlu`` layout (JSONL/JSON/Parquet, or CSV): ``question``,
  ``choices`` (a list, or its JSON text), ``answer`` (0-based index or letter),
  optionally ``subject``.

The original CSVs have no header, which :func:`yapo.data.files.read_table` cannot
guess, so CSVs are read here; the other layouts go through ``read_table``. Either way
bad rows are counted in a :class:`~yapo.data.validation.LoadReport`, like every loader
in :mod:`yapo.data`.
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from yapo.data.files import read_table
from yapo.data.prompts import ANSWER_LETTERS
from yapo.data.validation import LoadReport
from yapo.errors import YapoError

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
