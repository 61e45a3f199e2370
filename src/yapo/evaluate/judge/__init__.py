"""LLM judges for open-ended answers: an OpenAI-compatible HTTP client and a local model,
each grading with a :class:`Rubric` (the cultural 0–10 one by default, BiPO's 1–4 one).
"""

from yapo.evaluate.judge.base import FAILURES_EXIT_CODE, Judge, JudgeFailed, Judgement, JudgeTally
from yapo.evaluate.judge.behaviour import (
    BEHAVIOUR_RUBRIC,
    BehaviourRequest,
    ScaleParseError,
    make_behaviour_judge,
    parse_scale_reply,
)
from yapo.evaluate.judge.cache import JudgeCache
from yapo.evaluate.judge.client import OpenAIJudge
from yapo.evaluate.judge.cultural import (
    CULTURAL_RUBRIC,
    PARTS,
    JudgeRequest,
    RubricParseError,
    parse_judgement,
)
from yapo.evaluate.judge.local import LocalJudge
from yapo.evaluate.judge.rubric import Rubric, UnusableReply

__all__ = [
    "BEHAVIOUR_RUBRIC",
    "CULTURAL_RUBRIC",
    "FAILURES_EXIT_CODE",
    "PARTS",
    "BehaviourRequest",
    "Judge",
    "JudgeCache",
    "JudgeFailed",
    "JudgeRequest",
    "JudgeTally",
    "Judgement",
    "LocalJudge",
    "OpenAIJudge",
    "Rubric",
    "RubricParseError",
    "ScaleParseError",
    "UnusableReply",
    "make_behaviour_judge",
    "parse_judgement",
    "parse_scale_reply",
]
