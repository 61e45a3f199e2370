"""The three kinds of record every other module speaks.

* :class:`PreferencePair` — what the trainers learn from (prompt, chosen, rejected).
* :class:`CulturalMCQ` — one multiple-choice question in its localized form (country
  named) and its non-localized form (country omitted), with per-option country labels.
* :class:`OpenQuestion` — an open-ended question in both forms with a reference answer.

``question_id`` ties the variants of one question together: splits are made by it so
that a question's localized and non-localized forms never straddle train and test.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

Setting = Literal["localized", "nonlocalized"]
SETTINGS: tuple[Setting, ...] = ("localized", "nonlocalized")
WESTERN = "Western"


@dataclass
class PreferencePair:
    """A prompt with a preferred (``chosen``) and a dispreferred (``rejected``) response."""

    prompt: str
    chosen: str
    rejected: str
    id: str | None = None
    question_id: str | None = None
    country: str | None = None
    language: str | None = None
    setting: Setting | None = None
    metadata: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class CulturalMCQ:
    """One cultural multiple-choice question, in localized and non-localized form.

    ``option_countries[i]`` names the country whose culturally valid answer option ``i``
    is (``"Western"`` for the Western/default control option); ``answer`` indexes the
    option that is correct for ``country``.
    """

    id: str
    question_id: str
    language: str
    country: str
    localized: str
    nonlocalized: str
    options: list[str]
    answer: int
    topic: str | None = None
    option_countries: list[str] | None = None
    metadata: dict[str, Any] = field(default_factory=dict)

    def question(self, setting: Setting) -> str:
        return self.localized if setting == "localized" else self.nonlocalized

    @property
    def western_index(self) -> int | None:
        """Index of the Western/default option, if the item has one."""
        if not self.option_countries:
            return None
        for i, label in enumerate(self.option_countries):
            if label == WESTERN:
                return i
        return None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class OpenQuestion:
    """An open-ended cultural question in both forms, with a reference answer."""

    id: str
    question_id: str
    language: str
    country: str
    localized: str
    nonlocalized: str
    reference: str
    topic: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)

    def question(self, setting: Setting) -> str:
        return self.localized if setting == "localized" else self.nonlocalized

    def to_json(self) -> dict[str, Any]:
        return asdict(self)
