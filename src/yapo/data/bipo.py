"""BiPO's behaviour test sets: the records of :mod:`yapo.evaluate.behaviour`.

BiPO (Cao et al., NeurIPS 2024) ships one folder per behaviour — power-seeking,
wealth-seeking, hallucination, jailbreak — with ``question, matching, not_matching``
CSVs; ``test_infer.csv`` adds the A/B form ``question, A, B, matching``. Both forms load
into :class:`BehaviourItem`; like every loader in :mod:`yapo.data`, bad rows are skipped
and counted in a :class:`~yapo.data.validation.LoadReport` rather than silently used.
An item without a file-given A/B order gets one from a seeded coin, so position bias
cannot pass for steering.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from yapo.data.defects import find_marker
from yapo.data.files import read_table
from yapo.data.validation import DuplicateTracker, LoadReport, normalize_text
from yapo.errors import YapoError

BEHAVIOURS = ("power-seeking", "wealth-seeking", "hallucination", "jailbreak")
LETTERS = ("A", "B")


@dataclass(frozen=True)
class BehaviourItem:
    """One test question with the answer showing the behaviour and the one that does not."""

    id: str
    task: str
    question: str
    matching: str
    not_matching: str
    location: str = ""
    matching_letter: str | None = None  # from an A/B file; None: placed by a seeded coin

    def ab(self, seed: int = 0) -> tuple[list[str], int]:
        """The two options in A/B order and the index of the matching one."""
        letter = self.matching_letter
        if letter is None:
            digest = hashlib.sha256(f"{seed}|{self.id}|{self.question}".encode()).digest()
            letter = LETTERS[digest[0] % 2]
        if letter == "A":
            return [self.matching, self.not_matching], 0
        return [self.not_matching, self.matching], 1


def _task_from_path(path: Path) -> str:
    for part in (path.parent.name, path.stem):
        if part in BEHAVIOURS:
            return part
    return path.parent.name or path.stem


def behaviour_file(task: str, data: str | Path | None) -> Path:
    """``<data>/<task>/test_infer.csv`` (else ``test.csv``), or ``task`` itself if it is a file."""
    as_path = Path(task)
    if as_path.is_file():
        return as_path
    if task not in BEHAVIOURS:
        raise YapoError(
            f"unknown behaviour task {task!r}: use one of {', '.join(BEHAVIOURS)} with --data "
            "pointing at BiPO's data folder, or give a CSV file"
        )
    if data is None:
        raise YapoError(
            f"task {task!r} needs --data: BiPO's data folder (with {task}/test_infer.csv) "
            "or one CSV file"
        )
    root = Path(data)
    if root.is_file():
        return root
    for name in ("test_infer.csv", "test.csv"):
        for candidate in (root / task / name, root / name):
            if candidate.is_file():
                return candidate
    raise YapoError(f"no {task}/test_infer.csv or {task}/test.csv under {root}")


def load_behaviour(
    task: str, data: str | Path | None = None
) -> tuple[list[BehaviourItem], LoadReport]:
    """Read a BiPO behaviour CSV (A/B or matching/not_matching form), skipping bad rows.

    Empty questions or answers, identical answers, duplicate rows and rows carrying stray
    generation markers (``<META_START>``, ``[INST]``, ...) are skipped and reported.
    """
    path = behaviour_file(task, data)
    name = _task_from_path(path) if Path(task).is_file() else task
    table = read_table(str(path))
    report = LoadReport(source=str(path))
    for location, message in table.unreadable:
        report.bad(location, message)
    columns = set(table.columns)
    ab_form = {"question", "A", "B", "matching"} <= columns
    if not ab_form and not {"question", "matching", "not_matching"} <= columns:
        raise YapoError(
            f"{path}: expected BiPO columns question,A,B,matching or "
            f"question,matching,not_matching; found {table.columns}"
        )
    seen = DuplicateTracker()
    items: list[BehaviourItem] = []
    for index, row in enumerate(table.rows):
        data_row = row.data
        question = str(data_row.get("question") or "").strip()
        letter: str | None = None
        if ab_form:
            letter = str(data_row.get("matching") or "").strip().strip("()").upper()
            if letter not in LETTERS:
                report.bad(row.location, f"matching must be A or B, got {letter!r}")
                continue
            other = "B" if letter == "A" else "A"
            matching = str(data_row.get(letter) or "").strip()
            not_matching = str(data_row.get(other) or "").strip()
        else:
            matching = str(data_row.get("matching") or "").strip()
            not_matching = str(data_row.get("not_matching") or "").strip()
        if not question or not matching or not not_matching:
            report.empty(row.location, "empty question or answer")
            continue
        if normalize_text(matching) == normalize_text(not_matching):
            report.defective(row.location, "the two answers are the same")
            continue
        marker = next(
            (m for m in (find_marker(t) for t in (question, matching, not_matching)) if m), None
        )
        if marker:
            report.defective(row.location, f"stray generation marker {marker!r}")
            continue
        key = tuple(normalize_text(t) for t in (question, matching, not_matching))
        earlier = seen.earlier(key, row.location)
        if earlier:
            report.duplicate(row.location, f"repeats {earlier}")
            continue
        items.append(
            BehaviourItem(
                id=f"{name}-{index}",
                task=name,
                question=question,
                matching=matching,
                not_matching=not_matching,
                location=row.location,
                matching_letter=letter,
            )
        )
        report.kept()
    if not items:
        raise YapoError(f"{path}: no usable items\n{report.summary()}")
    return items, report
