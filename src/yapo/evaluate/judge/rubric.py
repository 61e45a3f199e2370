"""What a judge grades with: a :class:`Rubric` — prompt, reply reader, scale, version.

The judges (:class:`~yapo.evaluate.judge.OpenAIJudge`, :class:`~yapo.evaluate.judge.LocalJudge`)
own transport, retries, deadlines and caching; a rubric owns everything that depends on
*what* is graded. Keeping the two apart means a new grading scale is a new rubric value,
never a judge subclass that overrides private methods, and the judges' reliability
behaviour (docs/reliability.md) is the same for every rubric.

The rubrics of the package are :data:`~yapo.evaluate.judge.cultural.CULTURAL_RUBRIC`
(the paper's four-part 0–10 grade of open-ended cultural answers) and
:data:`~yapo.evaluate.judge.behaviour.BEHAVIOUR_RUBRIC` (BiPO's 1–4 behaviour scale);
their text is in :mod:`yapo.evaluate.judge.rubrics`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

RequestT = TypeVar("RequestT")


class UnusableReply(ValueError):
    """A reply the rubric cannot read; its message is what the failed judgement records.

    HTTP judges retry such a reply (a sampled judge may answer properly next time); the
    greedy local judge records it at once.
    """


@dataclass(frozen=True)
class Rubric(Generic[RequestT]):
    """How to ask a judge about one kind of request and how to read its reply.

    ``render`` turns a request into chat messages; ``read`` turns a reply into scores
    and a rationale, raising :class:`UnusableReply` when it cannot; ``scale`` is the
    range of the total score; ``version`` names the rubric in results and cache keys,
    so changing the text or the reading under a new version asks the judge again.
    """

    version: str
    render: Callable[[RequestT], list[dict[str, str]]]
    read: Callable[[str], tuple[dict[str, float], str | None]]
    scale: tuple[float, float]

    def messages(self, request: RequestT) -> list[dict[str, str]]:
        """The chat messages sent to the judge."""
        return self.render(request)

    def cache_key(self, request: RequestT, judge_name: str) -> str:
        """Same judge, rubric and messages → same key; anything else → a new judgement."""
        payload = json.dumps(
            {"judge": judge_name, "rubric": self.version, "messages": self.messages(request)},
            sort_keys=True,
            ensure_ascii=False,
        )
        return hashlib.sha256(payload.encode("utf-8")).hexdigest()
