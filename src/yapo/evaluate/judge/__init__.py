"""LLM judges for open-ended answers: an OpenAI-compatible HTTP client and a local model."""

from yapo.evaluate.judge.base import FAILURES_EXIT_CODE, Judge, JudgeFailed, Judgement, JudgeTally
from yapo.evaluate.judge.cache import JudgeCache
from yapo.evaluate.judge.client import OpenAIJudge
from yapo.evaluate.judge.local import LocalJudge
from yapo.evaluate.judge.rubric import PARTS, JudgeRequest, RubricParseError, parse_judgement

__all__ = [
    "FAILURES_EXIT_CODE",
    "PARTS",
    "Judge",
    "JudgeCache",
    "JudgeFailed",
    "JudgeRequest",
    "JudgeTally",
    "Judgement",
    "LocalJudge",
    "OpenAIJudge",
    "RubricParseError",
    "parse_judgement",
]
