"""What every judge returns, and the interface the benchmark talks to.

A :class:`Judgement` is always produced, one per request and in request order: a judge
that cannot grade an answer (server errors, timeouts, unusable replies) returns a
judgement with ``error`` set and no scores. Failures are counted and reported, never
raised, so one bad reply cannot sink a long evaluation run; :class:`JudgeTally` then
decides the exit status at the end (every judgement failed: an error; more failures
than tolerated: exit code 3; always a one-line summary).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

from yapo.errors import YapoError
from yapo.evaluate.judge.cultural import MAX_TOTAL, JudgeRequest


@dataclass
class Judgement:
    """The grade of one answer, or why there is none."""

    key: str
    judge: str
    scores: dict[str, float] | None = None
    rationale: str | None = None
    error: str | None = None
    attempts: int = 0
    cached: bool = False
    raw: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.scores is not None and self.error is None

    @property
    def total(self) -> float | None:
        """The 0–10 score (sum of the four parts), ``None`` for a failure."""
        return float(sum(self.scores.values())) if self.ok and self.scores else None

    @property
    def normalized(self) -> float | None:
        """The total divided by 10, the [0, 1] score that RCA and PNLG use."""
        total = self.total
        return None if total is None else total / MAX_TOTAL

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["total"] = self.total
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Judgement:
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in data.items() if k in known})


class Judge(Protocol):
    """Anything that grades answers with the rubric."""

    name: str

    def judge(self, requests: Sequence[JudgeRequest]) -> list[Judgement]:
        """One judgement per request, in order; failures recorded, never raised."""
        ...

    def describe(self) -> dict[str, Any]:
        """What to write into results so that a reader knows who judged."""
        ...


class JudgeFailed(YapoError):
    """Every judgement of a run failed: there are no open-ended scores at all."""


@dataclass
class JudgeTally:
    """How many judgements a run asked for and how many failed (with a few reasons)."""

    total: int = 0
    failed: int = 0
    examples: list[str] = field(default_factory=list)

    def add(self, total: int, failed: int, examples: Sequence[str] = ()) -> None:
        self.total += total
        self.failed += failed
        self.examples.extend(examples[: max(0, 3 - len(self.examples))])

    def summary(self) -> str:
        first = f" (first: {self.examples[0]})" if self.examples else ""
        return f"judge: {self.failed} of {self.total} judgement(s) failed{first}"

    def exit_code(self, max_failures: int | None = 0) -> int:
        """0 when failures are within ``max_failures`` (None: any number), else 3.

        A run in which *every* judgement failed raises :class:`JudgeFailed` instead
        (exit 2): it measured nothing, whatever was tolerated.
        """
        if self.total and self.failed == self.total:
            raise JudgeFailed(
                f"every one of the {self.total} judgement(s) failed"
                + (f" (first: {self.examples[0]})" if self.examples else "")
                + "; check --judge-url/--judge-model, the server, or raise --judge-timeout "
                "/ --judge-deadline (the answers and the MCQ results were written)"
            )
        if max_failures is None or self.failed <= max_failures:
            return 0
        return FAILURES_EXIT_CODE


#: Exit code of a finished evaluation in which more judgements failed than tolerated.
FAILURES_EXIT_CODE = 3
