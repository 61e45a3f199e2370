"""The project's own small cultural dataset, shipped with the package.

Two language groups as in the YaPO paper: Arabic-speaking (Egypt, Morocco) and
Spanish-speaking (Mexico, Spain). Every question exists for each country of its group,
in English and in the local language (Arabic or Spanish), in a localized form (the
country is named) and a non-localized form (it is not). MCQ options are one culturally
valid answer per country of the group plus one Western option, labelled in
``option_countries``; option order is shuffled with a seed derived from the question id
(the same order in both languages), so the correct answer is spread over all letters.
Open-ended questions carry a short reference answer.

The sentences were written for this project; the facts are everyday ones (food,
greetings, holidays, customs, sports). ``question_id`` is shared by a question's
English and local-language versions, so a split by question keeps translations together.
"""

from __future__ import annotations

from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Literal, TypeVar

from yapo.data.cultural import load_mcq, load_open
from yapo.data.records import CulturalMCQ, OpenQuestion
from yapo.data.split import filter_countries
from yapo.data.validation import LoadReport
from yapo.errors import YapoError

DEMO_COUNTRIES = ("Egypt", "Morocco", "Mexico", "Spain")
DEMO_LANGUAGE_GROUPS = {"arabic": ("Egypt", "Morocco"), "spanish": ("Mexico", "Spain")}
_FILES = {"mcq": "culture_demo.jsonl", "open": "culture_demo_open.jsonl"}


def demo_dataset_path(kind: Literal["mcq", "open"] = "mcq") -> Path:
    """Path of the shipped demo file (``culture_demo.jsonl`` or ``..._open.jsonl``)."""
    if kind not in _FILES:
        raise YapoError(f"kind must be 'mcq' or 'open', got {kind!r}")
    path = Path(str(resources.files("yapo") / "resources" / "data" / _FILES[kind]))
    if not path.is_file():  # pragma: no cover - a broken installation
        raise YapoError(f"the demo dataset is missing from the installation: {path}")
    return path


Item = TypeVar("Item", CulturalMCQ, OpenQuestion)


def _select(
    items: list[Item], countries: Sequence[str] | None, languages: Sequence[str] | None
) -> list[Item]:
    items = filter_countries(items, countries, source="the demo dataset")
    return [item for item in items if languages is None or item.language in languages]


def load_demo_mcq(
    countries: Sequence[str] | None = None, languages: Sequence[str] | None = None
) -> tuple[list[CulturalMCQ], LoadReport]:
    """The demo MCQs, optionally only some countries and/or languages (``en``/``ar``/``es``).

    The report is the whole file's: the filter is a selection, not a defect.
    """
    items, report = load_mcq(demo_dataset_path("mcq"))
    return _select(items, countries, languages), report


def load_demo_open(
    countries: Sequence[str] | None = None, languages: Sequence[str] | None = None
) -> tuple[list[OpenQuestion], LoadReport]:
    """The demo open-ended questions, optionally filtered like :func:`load_demo_mcq`."""
    items, report = load_open(demo_dataset_path("open"))
    return _select(items, countries, languages), report
