"""Cultural MCQs from BLEnD (Myung et al., NeurIPS 2024; CC BY-SA 4.0).

BLEnD asks the same 500 everyday questions (ids such as ``Al-en-01``) about 16
countries/regions and records what local annotators answered, with vote counts
(``annotations/<Country>_data.json``; ``questions/<Country>_questions.csv`` adds the
topic). :func:`convert_blend` turns that into :class:`CulturalMCQ` items for the
countries you name:

* **Correct option**: the target country's most-voted English answer. Items whose top
  answer is tied, or has fewer than ``min_votes`` votes, are dropped: the "correct"
  answer would be a coin toss.
* **Western option**: the most-voted answer of ``western`` (``"US"`` or ``"UK"``; for the
  US itself the UK is used, and vice versa), labelled ``"Western"`` in
  ``option_countries``. Dropped if that answer is one the target's annotators also gave.
* **Other options**: other countries' most-voted answers, first from the other
  countries you asked for, then from the remaining BLEnD countries (each in a seeded
  order per question), up to ``n_options`` in all. The US and the UK are never used
  here: both are "Western", and the Western option is already there. An answer is used
  only if it differs from every option already chosen *and* from every answer (any
  vote count) the target's annotators gave, so exactly one option is right for the
  target.
* **Option order** is shuffled with a seed derived from (``seed``, country, question id),
  so the correct answer is not always first and the order is reproducible.
* **Localized question**: BLEnD's English question, which names the country ("... in
  Spain?"; "US"/"UK" are written "the US"/"the UK"). **Non-localized**: the same
  question with the mention removed by rules that are reliable for BLEnD's English
  templates: "in <Country>" anywhere ("What do people do in Spain in the morning ..."),
  "In <Country>, ..." at the start, and "<people|families|students|...> from <Country>"
  followed by a verb ("What do people from Spain eat ..."; at the end of the question,
  "... for people from Spain?", the bare "people" would read wrongly).
  Questions that name the country in any other way (possessives "Spain's", "of Spain",
  "for Spain", twice) are dropped, because removing the name there changes the meaning.
* **Local-language questions** (``languages=("es",)`` or ``("local",)``) are made where
  a removal rule exists: Spanish for Spain and Mexico ("en España", "de México",
  "En España, ..."), and only for questions whose English form passed the rules above.
  Other languages are skipped and the report says so. BLEnD has no translations of
  other countries' answers, so the options of a local-language item stay in English
  (``metadata["options_language"] = "en"``).

The :class:`BlendReport` counts, per country, how many items were kept per language
and why the others were dropped.
"""

from __future__ import annotations

import csv
import json
import os
import random
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from yapo.data.records import WESTERN, CulturalMCQ
from yapo.errors import YapoError

#: Each BLEnD country's local language (ISO 639-1).
BLEND_LANGUAGES = {
    "Algeria": "ar",
    "Assam": "as",
    "Azerbaijan": "az",
    "China": "zh",
    "Ethiopia": "am",
    "Greece": "el",
    "Indonesia": "id",
    "Iran": "fa",
    "Mexico": "es",
    "North_Korea": "ko",
    "Northern_Nigeria": "ha",
    "South_Korea": "ko",
    "Spain": "es",
    "UK": "en",
    "US": "en",
    "West_Java": "su",
}
#: How local-language questions name the country, for the languages with removal rules.
LOCAL_NAMES: dict[str, tuple[str, ...]] = {
    "Spain": ("España",),
    "Mexico": ("México", "Méjico", "Mexico"),
}
_WESTERN_ALTERNATIVE = {"US": "UK", "UK": "US"}
_ENGLISH_DISPLAY = {"US": "the US", "UK": "the UK"}
_PEOPLE = (
    "people|families|family|students|kids|children|adults|women|men|parents|fans|"
    "teenagers|residents|workers|citizens"
)


@dataclass
class CountryReport:
    """What happened to one country's BLEnD questions."""

    questions: int = 0
    kept: Counter[str] = field(default_factory=Counter)
    dropped: Counter[str] = field(default_factory=Counter)


@dataclass
class BlendReport:
    """Per-country kept counts (per language), drop reasons, and general notes."""

    countries: dict[str, CountryReport] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def kept(self) -> int:
        return sum(sum(c.kept.values()) for c in self.countries.values())

    def summary(self) -> str:
        lines = [f"BLEnD: kept {self.kept} item(s)"]
        for name, country in self.countries.items():
            kept = ", ".join(f"{lang}: {n}" for lang, n in sorted(country.kept.items())) or "none"
            lines.append(f"{name}: {country.questions} question(s); kept {kept}")
            for reason, count in country.dropped.most_common():
                lines.append(f"  dropped {count}: {reason}")
        lines.extend(f"note: {note}" for note in self.notes)
        return "\n".join(lines)

    def to_json(self) -> dict[str, Any]:
        return {
            "kept": self.kept,
            "countries": {
                name: {
                    "questions": c.questions,
                    "kept": dict(c.kept),
                    "dropped": dict(c.dropped),
                }
                for name, c in self.countries.items()
            },
            "notes": list(self.notes),
        }


@dataclass(frozen=True)
class _Answer:
    text: str
    variants: frozenset[str]
    count: int


def _normal(text: str) -> str:
    """Loose form of an answer for "is this the same answer" checks."""
    text = re.sub(r"[^\w\s]", " ", text.lower())
    words = text.split()
    if words and words[0] in ("the", "a", "an"):
        words = words[1:]
    joined = " ".join(words)
    return joined[:-1] if len(joined) > 3 and joined.endswith("s") else joined


def _answers(entry: dict[str, Any]) -> list[_Answer]:
    """Annotation groups as answers, most votes first (stable for ties)."""
    found = []
    for group in entry.get("annotations") or []:
        english = [a for a in group.get("en_answers") or [] if isinstance(a, str) and a.strip()]
        if not english:
            continue
        text = english[0].strip()
        found.append(
            _Answer(
                text=text[:1].upper() + text[1:],
                variants=frozenset(_normal(a) for a in english),
                count=int(group.get("count") or 0),
            )
        )
    return sorted(found, key=lambda a: -a.count)


def _top(answers: list[_Answer]) -> list[_Answer]:
    return [a for a in answers if answers and a.count == answers[0].count]


def _name_pattern(name: str) -> str:
    return rf"(?<![\w']){re.escape(name)}(?![\w'’])"


def _tidy(text: str) -> str:
    text = re.sub(r"\s+", " ", text).strip()
    return re.sub(r"\s+([?,.;:)])", r"\1", text)


def _capitalize_after(prefix: str, text: str) -> str:
    return prefix + text[:1].upper() + text[1:]


def remove_country_en(question: str, name: str) -> str | None:
    """BLEnD's English question without its country mention, or ``None`` if unreliable."""
    pattern = _name_pattern(name)
    if len(re.findall(pattern, question)) != 1 or re.search(pattern + r"['’]s", question):
        return None
    start = re.match(rf"^In {pattern},\s*(.*)$", question, re.DOTALL)
    if start:
        result = _capitalize_after("", start.group(1))
    elif re.search(rf"\sin {pattern}", question):
        result = re.sub(rf"\s+in {pattern}", "", question, count=1)
    elif re.search(rf"\b(?:{_PEOPLE}) from {pattern} \w", question):
        result = re.sub(rf"\b((?:{_PEOPLE})) from {pattern}", r"\1", question, count=1)
    else:
        return None
    result = _tidy(result)
    if re.search(pattern, result) or result == question:
        return None
    return result


def remove_country_es(question: str, names: Sequence[str]) -> str | None:
    """A Spanish BLEnD question without its country mention, or ``None``."""
    found = [(n, m) for n in names for m in re.finditer(_name_pattern(n), question)]
    if len(found) != 1:
        return None
    pattern = _name_pattern(found[0][0])
    start = re.match(rf"^(¿?)En {pattern},\s*(.*)$", question, re.DOTALL)
    if start:
        result = _capitalize_after(start.group(1), start.group(2))
    elif re.search(rf"\s(?:en|de) {pattern}", question):
        result = re.sub(rf"\s+(?:en|de) {pattern}", "", question, count=1)
    else:
        return None
    result = _tidy(result)
    return None if re.search(pattern, result) or result == question else result


def _localized_en(question: str, country: str) -> str:
    display = _ENGLISH_DISPLAY.get(country)
    if display is None:
        return question
    return re.sub(rf"(?<!the )(?<!The ){_name_pattern(country)}", display, question)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise YapoError(f"cannot read BLEnD annotations {path}: {exc}") from exc
    if not isinstance(data, dict):
        raise YapoError(f"{path} is not BLEnD annotations (expected an object of question ids)")
    return data


def _read_topics(path: Path) -> dict[str, str]:
    if not path.is_file():
        return {}
    with open(path, encoding="utf-8-sig", newline="") as handle:
        return {
            row["ID"]: row["Topic"]
            for row in csv.DictReader(handle)
            if row.get("ID") and row.get("Topic")
        }


def _available(blend_dir: Path) -> dict[str, Path]:
    folder = blend_dir / "annotations"
    if not folder.is_dir():
        raise YapoError(
            f"{blend_dir} is not a BLEnD data folder (expected annotations/<Country>_data.json)"
        )
    return {p.name[: -len("_data.json")]: p for p in sorted(folder.glob("*_data.json"))}


def _pick(candidates: list[_Answer], taken: set[str]) -> _Answer | None:
    """The first top-voted answer that shares no variant with ``taken``."""
    for answer in candidates:
        if not answer.variants & taken:
            return answer
    return None


def _languages_for(country: str, languages: Sequence[str], report: BlendReport) -> list[str]:
    local = BLEND_LANGUAGES.get(country)
    chosen: list[str] = []
    for language in languages:
        code = local if language == "local" else language
        if code is None:
            report.notes.append(f"{country}: its local language is unknown; 'local' skipped")
            continue
        if code == "en":
            if "en" not in chosen:
                chosen.append("en")
            continue
        if code != local:
            report.notes.append(
                f"{country}: BLEnD has no {code!r} questions for it (its language is {local!r})"
            )
            continue
        if country not in LOCAL_NAMES:
            report.notes.append(
                f"{country}: no reliable rule to remove the country from {code!r} questions; "
                "local-language items skipped"
            )
            continue
        if code not in chosen:
            chosen.append(code)
    return chosen


def convert_blend(
    blend_dir: str | os.PathLike[str],
    countries: Sequence[str],
    languages: Sequence[str] = ("en",),
    n_options: int = 4,
    western: str = "US",
    *,
    min_votes: int = 2,
    seed: int = 0,
) -> tuple[list[CulturalMCQ], BlendReport]:
    """BLEnD questions about ``countries`` as MCQs (see the module docstring)."""
    root = Path(blend_dir)
    available = _available(root)
    unknown = [c for c in countries if c not in available]
    if not countries or unknown:
        raise YapoError(
            f"unknown BLEnD countr{'y' if len(unknown) == 1 else 'ies'} "
            f"{', '.join(unknown) or '(none given)'}; available: {', '.join(available)}"
        )
    if western not in available:
        raise YapoError(f"Western country {western!r} is not in {root}; use US or UK")
    if n_options < 2:
        raise YapoError(f"n_options must be at least 2 (correct + Western), got {n_options}")
    annotations = {name: _read_json(path) for name, path in available.items()}
    report = BlendReport()
    items: list[CulturalMCQ] = []
    for country in countries:
        stats = report.countries.setdefault(country, CountryReport())
        western_country = western if country != western else _WESTERN_ALTERNATIVE.get(western)
        if western_country is None or western_country not in available:
            report.notes.append(f"{country}: no other Western country available; skipped")
            continue
        if western_country != western:
            report.notes.append(f"{country}: {western_country} answers used as the Western option")
        targets = _languages_for(country, languages, report)
        topics = _read_topics(root / "questions" / f"{country}_questions.csv")
        excluded = {country, *_WESTERN_ALTERNATIVE}  # the US and the UK are both "Western"
        others = [c for c in countries if c not in excluded]
        rest = sorted(c for c in available if c not in (*excluded, *others))
        for qid, entry in annotations[country].items():
            stats.questions += 1
            reason, built = _build(
                country,
                qid,
                entry,
                annotations,
                western_country,
                others,
                rest,
                targets,
                n_options,
                min_votes,
                seed,
                topics.get(qid),
            )
            if reason:
                stats.dropped[reason] += 1
            for dropped in built.get("dropped", []):
                stats.dropped[dropped] += 1
            for item in built.get("items", []):
                stats.kept[item.language] += 1
                items.append(item)
    return items, report


def _build(
    country: str,
    qid: str,
    entry: dict[str, Any],
    annotations: dict[str, dict[str, Any]],
    western_country: str,
    others: list[str],
    rest: list[str],
    languages: list[str],
    n_options: int,
    min_votes: int,
    seed: int,
    topic: str | None,
) -> tuple[str | None, dict[str, list[Any]]]:
    """One question id of one country: ``(drop reason, {"items", "dropped"})``."""
    chosen = _choose_options(
        country, qid, entry, annotations, western_country, others, rest, n_options, min_votes, seed
    )
    if isinstance(chosen, str):
        return chosen, {}
    options, labels = chosen
    order = list(range(n_options))
    random.Random(f"{seed}:{country}:{qid}").shuffle(order)
    english = entry.get("en_question") or ""
    name = country.replace("_", " ")
    nonlocalized_en = remove_country_en(english, name) if english else None
    if nonlocalized_en is None:
        return "country mention not removable (English)", {}
    built: dict[str, list[Any]] = {"items": [], "dropped": []}
    for language in languages:
        if language == "en":
            localized, nonlocalized = _localized_en(english, name), nonlocalized_en
        else:
            localized = (entry.get("question") or "").strip()
            nonlocalized = remove_country_es(localized, LOCAL_NAMES[country]) or ""
            if not nonlocalized:
                built["dropped"].append(f"country mention not removable ({language})")
                continue
        built["items"].append(
            CulturalMCQ(
                id=f"blend:{country}:{qid}:{language}",
                question_id=f"blend:{qid}",
                language=language,
                country=country,
                localized=localized,
                nonlocalized=nonlocalized,
                options=[options[i].text for i in order],
                answer=order.index(0),
                topic=topic,
                option_countries=[labels[i] for i in order],
                metadata={
                    "source": "BLEnD",
                    "blend_id": qid,
                    "votes": options[0].count,
                    "western_country": western_country,
                    "options_language": "en",
                },
            )
        )
    return None, built


def _choose_options(
    country: str,
    qid: str,
    entry: dict[str, Any],
    annotations: dict[str, dict[str, Any]],
    western_country: str,
    others: list[str],
    rest: list[str],
    n_options: int,
    min_votes: int,
    seed: int,
) -> str | tuple[list[_Answer], list[str]]:
    """The options (correct first, Western second) and their countries, or why there are none.

    Distractors come first from the other requested countries, then from the rest, each
    group in a seeded order, and no option may share a variant with one already taken,
    so the question has exactly one answer right for ``country``.
    """
    answers = _answers(entry)
    if not answers:
        return "no annotated answers"
    top = _top(answers)
    if len(top) > 1:
        return "tied top answers"
    if top[0].count < min_votes:
        return f"top answer has fewer than {min_votes} votes"
    forbidden = set().union(*(a.variants for a in answers))
    western_entry = annotations[western_country].get(qid)
    western_answers = _top(_answers(western_entry)) if western_entry else []
    if not western_answers:
        return "no Western answer"
    western_answer = _pick(western_answers, forbidden)
    if western_answer is None:
        return "Western answer is also a target answer"
    options = [top[0], western_answer]
    labels = [country, WESTERN]
    taken = forbidden | western_answer.variants
    pool_rng = random.Random(f"{seed}:{country}:{qid}:pool")
    first, then = list(others), list(rest)
    pool_rng.shuffle(first)
    pool_rng.shuffle(then)
    for other in [*first, *then]:
        if len(options) == n_options:
            break
        other_entry = annotations[other].get(qid)
        pick = _pick(_top(_answers(other_entry)), taken) if other_entry else None
        if pick is not None:
            options.append(pick)
            labels.append(other)
            taken |= pick.variants
    if len(options) < n_options:
        return f"fewer than {n_options} distinct answers across countries"
    return options, labels
