"""The paper's four-part 0–10 rubric of open-ended cultural answers, as a :class:`Rubric`.

Parts and ranges (they add up to 10):

==========================  =====
language quality            0–2
factual accuracy            0–3
cultural appropriateness    0–3
content quality             0–2
==========================  =====

The judge is asked for one JSON object with these four keys. Replies are read
leniently (code fences, prose around the JSON, ``"Factual accuracy: 2"`` lines) because
small local judges are sloppy, but strictly on the numbers: a missing part or a value
outside its range makes the reply unusable (:class:`RubricParseError`) rather than
silently clipped, so bad judgements are counted as failures, never as scores.

The prompt text is in :mod:`yapo.evaluate.judge.rubrics`; this module fills it in
(:class:`JudgeRequest`) and reads the replies (:func:`parse_judgement`).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from yapo.evaluate.judge.rubric import Rubric, UnusableReply
from yapo.evaluate.judge.rubrics import CULTURAL_VERSION, SYSTEM_PROMPT, USER_TEMPLATE

PARTS: dict[str, float] = {
    "language_quality": 2.0,
    "factual_accuracy": 3.0,
    "cultural_appropriateness": 3.0,
    "content_quality": 2.0,
}
MAX_TOTAL = sum(PARTS.values())


class RubricParseError(UnusableReply):
    """The judge's reply does not contain four in-range scores."""


@dataclass(frozen=True)
class JudgeRequest:
    """One answer to grade. ``key`` identifies it in the results (item id + setting)."""

    key: str
    question: str
    answer: str
    reference: str
    country: str
    language: str


def cultural_messages(request: JudgeRequest) -> list[dict[str, str]]:
    """The system rubric and the filled-in user turn for one answer."""
    user = USER_TEMPLATE.format(
        country=request.country,
        language=request.language,
        question=request.question,
        reference=request.reference,
        answer=request.answer.strip() or "(empty answer)",
    )
    return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": user}]


_FENCE = re.compile(r"```(?:json)?\s*(.*?)```", re.DOTALL | re.IGNORECASE)
_NUMBER = r"(-?\d+(?:\.\d+)?)"


def _candidate_objects(text: str) -> list[str]:
    """JSON-looking substrings: fenced blocks first, then every balanced ``{...}``."""
    found = [m.group(1).strip() for m in _FENCE.finditer(text)]
    depth, start = 0, -1
    for i, char in enumerate(text):
        if char == "{":
            if depth == 0:
                start = i
            depth += 1
        elif char == "}" and depth > 0:
            depth -= 1
            if depth == 0:
                found.append(text[start : i + 1])
    return found


def _normalise_key(key: str) -> str:
    return re.sub(r"[^a-z]+", "_", key.lower()).strip("_")


def _from_json(text: str) -> dict[str, Any] | None:
    for candidate in _candidate_objects(text):
        try:
            data = json.loads(candidate)
        except json.JSONDecodeError:
            continue
        if isinstance(data, dict):
            normalised = {_normalise_key(str(k)): v for k, v in data.items()}
            if any(part in normalised for part in PARTS):
                return normalised
    return None


def _from_lines(text: str) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for part in PARTS:
        words = r"[\s_-]*".join(part.split("_"))
        pattern = rf"{words}\**\s*(?:\([^)]*\))?\s*\**\s*[:=]\s*\**\s*{_NUMBER}"
        match = re.search(pattern, text, re.IGNORECASE)
        if match:
            found[part] = match.group(1)
    return found


def parse_judgement(text: str) -> tuple[dict[str, float], str | None]:
    """The four part scores (and a rationale, if given) from a judge's reply."""
    data = _from_json(text)
    if data is None:
        data = _from_lines(text)
    scores: dict[str, float] = {}
    problems: list[str] = []
    for part, top in PARTS.items():
        raw = data.get(part)
        if raw is None:
            problems.append(f"{part} missing")
            continue
        try:
            value = float(raw)
        except (TypeError, ValueError):
            problems.append(f"{part}={raw!r} is not a number")
            continue
        if not 0.0 <= value <= top:
            problems.append(f"{part}={value:g} outside 0..{top:g}")
            continue
        scores[part] = value
    if problems:
        preview = text.strip().replace("\n", " ")[:160]
        raise RubricParseError(f"unusable judge reply ({'; '.join(problems)}): {preview!r}")
    rationale = data.get("rationale")
    return scores, (str(rationale) if rationale is not None else None)


#: The rubric of open-ended cultural answers, the judges' default.
CULTURAL_RUBRIC: Rubric[JudgeRequest] = Rubric(
    version=CULTURAL_VERSION,
    render=cultural_messages,
    read=parse_judgement,
    scale=(0.0, MAX_TOTAL),
)
