"""BiPO's 1–4 behaviour scale as a :class:`~yapo.evaluate.judge.rubric.Rubric`.

A judge grades a free answer on BiPO's scale (4 = shows the behaviour fully, 1 = rejects
it), shown the test item's matching and non-matching answers as examples of 4 and 1;
the text per behaviour is in :mod:`yapo.evaluate.judge.rubrics`. The reply is read the
way BiPO reads it: the first of 1–4 on its first non-empty line. Any judge backend
grades with it when given ``rubric=BEHAVIOUR_RUBRIC``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from yapo.errors import YapoError
from yapo.evaluate.judge.client import OpenAIJudge
from yapo.evaluate.judge.local import LocalJudge
from yapo.evaluate.judge.rubric import Rubric, UnusableReply
from yapo.evaluate.judge.rubrics import (
    BEHAVIOUR_RUBRICS,
    BEHAVIOUR_SYSTEM,
    BEHAVIOUR_TEMPLATE,
    BEHAVIOUR_VERSION,
    GENERIC_BEHAVIOUR_RUBRIC,
)


@dataclass(frozen=True)
class BehaviourRequest:
    """One free answer to grade on the 1–4 scale, with the item's two example answers."""

    key: str
    task: str
    question: str
    answer: str
    example_4: str
    example_1: str


def behaviour_messages(request: BehaviourRequest) -> list[dict[str, str]]:
    """The task's rubric (a generic one for unknown tasks) filled in for one answer."""
    what, s4, s3, s2, s1 = BEHAVIOUR_RUBRICS.get(request.task, GENERIC_BEHAVIOUR_RUBRIC)
    user = BEHAVIOUR_TEMPLATE.format(
        question=request.question,
        answer=request.answer.strip() or "(empty)",
        what=what,
        s4=s4,
        s3=s3,
        s2=s2,
        s1=s1,
        example_4=request.example_4,
        example_1=request.example_1,
    )
    return [{"role": "system", "content": BEHAVIOUR_SYSTEM}, {"role": "user", "content": user}]


class ScaleParseError(ValueError):
    """The judge's reply does not start with a score from 1 to 4."""


_SCORE = re.compile(r"(?<![\d.])([1-4])(?!\d|\.\d)")  # "2" or "2." but not "12", "2.5"


def parse_scale_reply(text: str) -> dict[str, float]:
    """``{"score": s}`` with ``s`` in 1..4 from the reply's first non-empty line."""
    first = next((line for line in text.splitlines() if line.strip()), "")
    match = _SCORE.search(first)
    if not match:
        raise ScaleParseError(f"no score 1-4 on the first line of the reply: {first[:120]!r}")
    return {"score": float(match.group(1))}


def read_scale_reply(text: str) -> tuple[dict[str, float], str | None]:
    """The score and, as the rationale, the whole reply (BiPO's judges explain after it)."""
    try:
        scores = parse_scale_reply(text)
    except ScaleParseError as exc:
        raise UnusableReply(f"unusable judge reply ({exc})") from exc
    return scores, text.strip() or None


#: BiPO's behaviour scale: one part, ``score`` in 1..4.
BEHAVIOUR_RUBRIC: Rubric[BehaviourRequest] = Rubric(
    version=BEHAVIOUR_VERSION,
    render=behaviour_messages,
    read=read_scale_reply,
    scale=(1.0, 4.0),
)


def make_behaviour_judge(
    judge_url: str | None,
    judge_model: str | None,
    judge_local: str | None,
    *,
    dtype: str | None = None,
    device: str | None = None,
    concurrency: int = 4,
    max_retries: int = 3,
) -> LocalJudge | OpenAIJudge:
    """A judge backend of :mod:`yapo.evaluate.judge` that reads 1–4 replies."""
    if judge_local and (judge_url or judge_model):
        raise YapoError("use either --judge-local or --judge-url/--judge-model, not both")
    if judge_local:
        from yapo.models import load_model

        model, tokenizer = load_model(judge_local, dtype=dtype, device=device)
        return LocalJudge(
            model, tokenizer, name=judge_local, max_new_tokens=32, rubric=BEHAVIOUR_RUBRIC
        )
    if not judge_model:
        raise YapoError("--open-ended needs a judge: --judge-url + --judge-model, or --judge-local")
    return OpenAIJudge(
        judge_model,
        judge_url,
        concurrency=concurrency,
        max_retries=max_retries,
        max_tokens=32,
        rubric=BEHAVIOUR_RUBRIC,
    )
