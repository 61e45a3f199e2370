"""The paper's four-part 0–10 rubric: the judge prompt, and reading the judge's reply.

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
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from typing import Any

RUBRIC_VERSION = "yapo-cultural-rubric-v1"
PARTS: dict[str, float] = {
    "language_quality": 2.0,
    "factual_accuracy": 3.0,
    "cultural_appropriateness": 3.0,
    "content_quality": 2.0,
}
MAX_TOTAL = sum(PARTS.values())

SYSTEM_PROMPT = """You are a strict, fair grader of answers to questions about everyday culture.
Grade the ANSWER to the QUESTION for a person from the stated COUNTRY, using the REFERENCE
answer (from people of that country) as the ground truth. Score four parts:

- language_quality (0-2): fluent, grammatical, in the language of the question.
- factual_accuracy (0-3): agrees with the reference and with facts about the country.
- cultural_appropriateness (0-3): fits the customs and norms of that country, not a generic
  or Western default.
- content_quality (0-2): relevant, complete and to the point.

Integers or halves are fine. Reply with ONLY one JSON object, for example:
{"language_quality": 2, "factual_accuracy": 1, "cultural_appropriateness": 2,
 "content_quality": 1, "rationale": "one short sentence"}"""

USER_TEMPLATE = """COUNTRY: {country}
LANGUAGE: {language}
QUESTION: {question}
REFERENCE: {reference}
ANSWER: {answer}"""


class RubricParseError(ValueError):
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

    def messages(self) -> list[dict[str, str]]:
        """The chat messages sent to the judge."""
        user = USER_TEMPLATE.format(
            country=self.country,
            language=self.language,
            question=self.question,
            reference=self.reference,
            answer=self.answer.strip() or "(empty answer)",
        )
        return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": user}]

    def cache_key(self, judge_name: str) -> str:
        """Same judge, rubric and messages → same key; anything else → a new judgement."""
        payload = json.dumps(
            {"judge": judge_name, "rubric": RUBRIC_VERSION, "messages": self.messages()},
            sort_keys=True,
            ensure_ascii=False,
        )
        return hashlib.sha256(payload.encode("utf-8")).hexdigest()


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
