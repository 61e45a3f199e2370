"""What a loader saw, kept, and threw away — and why.

Every loader returns its records together with a :class:`LoadReport`. Records that are
empty, duplicated or carry known generation defects are *skipped and counted* (never
silently used); records that are malformed (a missing field, a wrong type, an answer
index out of range) are *invalid*: by default the loader raises one :class:`YapoError`
that lists every bad record with its ``file:line`` so the user can fix them all in one
pass; with ``strict=False`` they are skipped and listed in the report instead.

Locations are strings made by the reader: ``train.csv:411`` for line-based files (the
physical line where the record starts, so multi-line CSV cells still point at the right
place), ``data.parquet:row 12`` for tables and ``owner/name[train]:row 12`` for Hub
datasets (rows are 1-based).
"""

from __future__ import annotations

import math
from collections.abc import Hashable
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from yapo.errors import YapoError

ProblemKind = Literal["empty", "duplicate", "defective", "invalid", "trimmed", "warning"]

#: How many problems of one kind :meth:`LoadReport.summary` prints before eliding.
SUMMARY_LIMIT = 20


@dataclass(frozen=True)
class Problem:
    """One record-level finding: where it is, what kind, and a human sentence."""

    location: str
    kind: ProblemKind
    message: str

    def __str__(self) -> str:
        return f"{self.location}: {self.message}"


@dataclass
class LoadReport:
    """Counts and per-record messages for one load.

    ``loaded`` records were returned. ``skipped_empty`` had a blank required field,
    ``skipped_duplicate`` repeated an earlier record, ``skipped_defective`` were well
    formed but unusable (stray generation markers, truncated answers), ``invalid`` were
    malformed. ``trimmed`` counts records that were kept after a repair (e.g. a
    truncated answer cut back to its last full sentence); they are included in
    ``loaded``. ``warnings`` do not change any count.
    """

    source: str
    loaded: int = 0
    skipped_empty: int = 0
    skipped_duplicate: int = 0
    skipped_defective: int = 0
    invalid: int = 0
    trimmed: int = 0
    problems: list[Problem] = field(default_factory=list)

    @property
    def seen(self) -> int:
        """Records read from the source (kept + every kind of skipped or invalid)."""
        return (
            self.loaded
            + self.skipped_empty
            + self.skipped_duplicate
            + self.skipped_defective
            + self.invalid
        )

    @property
    def skipped(self) -> int:
        return self.skipped_empty + self.skipped_duplicate + self.skipped_defective

    def messages(self, kind: ProblemKind | None = None) -> list[str]:
        """``file:line: message`` strings, optionally of one kind only."""
        return [str(p) for p in self.problems if kind is None or p.kind == kind]

    # -- recording -------------------------------------------------------------------
    def kept(self) -> None:
        self.loaded += 1

    def empty(self, location: str, message: str) -> None:
        self.skipped_empty += 1
        self.problems.append(Problem(location, "empty", message))

    def duplicate(self, location: str, message: str) -> None:
        self.skipped_duplicate += 1
        self.problems.append(Problem(location, "duplicate", message))

    def defective(self, location: str, message: str) -> None:
        self.skipped_defective += 1
        self.problems.append(Problem(location, "defective", message))

    def bad(self, location: str, message: str) -> None:
        self.invalid += 1
        self.problems.append(Problem(location, "invalid", message))

    def repaired(self, location: str, message: str) -> None:
        self.trimmed += 1
        self.problems.append(Problem(location, "trimmed", message))

    def warn(self, location: str, message: str) -> None:
        self.problems.append(Problem(location, "warning", message))

    # -- outcome ---------------------------------------------------------------------
    def check(self, strict: bool) -> None:
        """Raise one error listing every invalid record, when ``strict``."""
        if strict and self.invalid:
            lines = "\n".join(f"  {m}" for m in self.messages("invalid"))
            raise YapoError(
                f"{self.invalid} invalid record(s) in {self.source} "
                f"(fix them, or pass strict=False / --no-strict to skip them):\n{lines}"
            )

    def merge(self, other: LoadReport) -> LoadReport:
        """Add another report's counts and problems into this one (returns self)."""
        self.loaded += other.loaded
        self.skipped_empty += other.skipped_empty
        self.skipped_duplicate += other.skipped_duplicate
        self.skipped_defective += other.skipped_defective
        self.invalid += other.invalid
        self.trimmed += other.trimmed
        self.problems.extend(other.problems)
        return self

    def summary(self, limit: int = SUMMARY_LIMIT) -> str:
        """A few lines a person can read: counts, then the problems grouped by kind."""
        lines = [
            f"{self.source}: loaded {self.loaded} of {self.seen} record(s); "
            f"skipped {self.skipped_empty} empty, {self.skipped_duplicate} duplicate, "
            f"{self.skipped_defective} defective; {self.invalid} invalid; "
            f"{self.trimmed} trimmed"
        ]
        titles: dict[ProblemKind, str] = {
            "invalid": "invalid",
            "empty": "skipped (empty)",
            "duplicate": "skipped (duplicate)",
            "defective": "skipped (defective)",
            "trimmed": "kept after trimming",
            "warning": "warnings",
        }
        for kind, title in titles.items():
            found = self.messages(kind)
            if not found:
                continue
            lines.append(f"{title}:")
            lines.extend(f"  {m}" for m in found[:limit])
            if len(found) > limit:
                lines.append(f"  ... and {len(found) - limit} more")
        return "\n".join(lines)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["seen"] = self.seen
        return data


class DuplicateTracker:
    """Remembers record keys and where each was first seen."""

    def __init__(self) -> None:
        self._first: dict[Hashable, str] = {}

    def earlier(self, key: Hashable, location: str) -> str | None:
        """Where a record with this key was seen before, or ``None`` (then remember it)."""
        found = self._first.get(key)
        if found is None:
            self._first[key] = location
        return found


def normalize_text(text: str) -> str:
    """Whitespace-normalized text, the form used to detect duplicates."""
    return " ".join(text.split())


def text_field(
    row: dict[str, Any], name: str, *, required: bool = True
) -> tuple[str | None, str | None]:
    """Read a string field: ``(value, error)``; blank strings come back as ``""``.

    ``None``/missing gives ``""`` for required fields (an *empty* record, not a
    malformed one: BiPO's blank questions are read as empty strings by CSV and as
    nulls by Parquet, and both mean the same thing). Numbers are accepted and turned
    into text (an answer "5" may be stored as an integer). Anything else (a list, a
    mapping) is an error.
    """
    value = row.get(name)
    if value is None:
        return ("" if required else None), None
    if isinstance(value, bool):
        return None, f"field {name!r} must be text, got a boolean"
    if isinstance(value, float) and math.isnan(value):
        return ("" if required else None), None
    if isinstance(value, int | float):
        return str(value), None
    if not isinstance(value, str):
        return None, f"field {name!r} must be text, got {type(value).__name__}"
    return value.strip(), None


@dataclass
class RejectedCensus:
    """Why MCQ items gave no preference pair under a policy (``yapo data to-pairs``).

    ``no_western``: no option is marked Western; ``western_is_correct``: the Western
    option *is* the correct answer (e.g. the English rows of a localization set whose
    answer is the Western one), so there is nothing to prefer it against;
    ``no_other_wrong``: no wrong option of the asked kind.
    """

    policy: str
    items: int = 0
    no_western: int = 0
    western_is_correct: int = 0
    no_other_wrong: int = 0

    @property
    def left_out(self) -> int:
        return self.no_western + self.western_is_correct + self.no_other_wrong

    def summary(self) -> str:
        parts = []
        if self.western_is_correct:
            parts.append(
                f"{self.western_is_correct} whose Western option is the correct answer "
                "(nothing to prefer it against)"
            )
        if self.no_western:
            parts.append(f"{self.no_western} with no option marked Western (western_index)")
        if self.no_other_wrong:
            parts.append(f"{self.no_other_wrong} with no wrong option of that kind")
        reasons = "; ".join(parts) or "none"
        return (
            f"{self.left_out} of {self.items} MCQ item(s) gave no pair under "
            f"--policy {self.policy}: {reasons}"
        )


def rejected_option_census(items: Any, policy: str) -> RejectedCensus:
    """Count, per reason, the items that have no rejected option under ``policy``.

    Mirrors the policies of :func:`yapo.data.cultural.mcq_to_preferences` (items are
    read duck-typed: ``answer``, ``western_index``, ``options``); other policies (a
    model's own choice) are not counted here.
    """
    census = RejectedCensus(policy)
    for item in items:
        census.items += 1
        western = getattr(item, "western_index", None)
        answer = item.answer
        wrong = [i for i in range(len(item.options)) if i != answer]
        if policy == "western":
            if western is None:
                census.no_western += 1
            elif western == answer:
                census.western_is_correct += 1
        elif policy == "other_country":
            if not [i for i in wrong if i != western]:
                census.no_other_wrong += 1
        elif policy == "all" and not wrong:
            census.no_other_wrong += 1
    return census
