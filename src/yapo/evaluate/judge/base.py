"""What every judge returns, and the interface the benchmark talks to.

A :class:`Judgement` is always produced, one per request and in request order: a judge
that cannot grade an answer (server errors, timeouts, unusable replies) returns a
judgement with ``error`` set and no scores. Failures are counted and reported, never
raised, so one bad reply cannot sink a long evaluation run.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

from yapo.evaluate.judge.rubric import MAX_TOTAL, JudgeRequest


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
