"""Loader for the YaPO paper's Hub dataset layout (localized/non-localized row pairs).

The paper publishes its cultural data as a table whose rows hold, for one country and
one localization status, an MCQ prompt with its preferred and dispreferred answers and an
open-ended prompt with its preferred and dispreferred answers. We have not been able to
inspect the published files from this project, so the loader is written against the
documented column names and is tolerant about the details. Assumptions, in order of
confidence:

* ``localization_status`` is ``localized`` (the question names the country) or
  ``nonlocalized`` (it does not); spellings such as ``non-localized``, ``non_localized``
  or ``localised`` are accepted.
* ``prompt-mcq`` is the full MCQ prompt: the question followed by lettered option lines
  (``A. ...``/``A) ...``/``(A) ...``). ``chosen-mcq`` is the culturally correct answer and
  ``rejected-mcq`` the dispreferred one, each given as a letter (``B``, ``(B)``), a
  letter with its text (``B. Couscous``) or the option text itself.
* The rejected MCQ answer is the Western/default option (the paper's MCQs have one
  culturally valid option per country of a language group plus one Western control
  option). A ``country_mapping`` column (letter → country, as in the authors' related
  MCQ datasets) overrides this guess; options whose country is unknown are labelled
  ``"unknown"``. A ``choices`` column (letter → text) is used instead of parsing the
  prompt when present, and ``answer_choice`` instead of ``chosen-mcq`` for the answer.
* ``prompt-open``/``chosen-open``/``rejected-open`` are an open-ended question, a
  culturally appropriate reference answer, and a generic/Western answer.
* The two rows of one question share ``question_id`` (with ``country`` and
  ``language``). Without a ``question_id`` column, rows are paired by country, language
  and their chosen answers, which the two forms of a question share.

Column names are matched case-insensitively with ``-``, ``_`` and spaces equivalent, and
a few aliases are accepted (``prompt_open_ended``, ``main_topic``, ``language_code``).

Output: :class:`PaperDataset` with ``mcq`` (one :class:`CulturalMCQ` per question whose
two rows were found and parsed), ``open`` (one :class:`OpenQuestion` per such question),
``pairs`` (every row's MCQ and open preference pair exactly as written by the authors,
``metadata["kind"]`` ``"mcq"``/``"open"``, ``setting`` from the row); returned with a
:class:`LoadReport` (like every loader) whose warnings say which questions could not be
paired or parsed.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from yapo.data.files import Row, read_table
from yapo.data.prompts import ANSWER_LETTERS, parse_mcq_prompt
from yapo.data.records import WESTERN, CulturalMCQ, OpenQuestion, PreferencePair, Setting
from yapo.data.validation import DuplicateTracker, LoadReport, normalize_text, text_field
from yapo.errors import YapoError

UNKNOWN_COUNTRY = "unknown"
_ALIASES = {
    "prompt_mcq": ("prompt_mcq", "mcq_prompt"),
    "chosen_mcq": ("chosen_mcq", "mcq_chosen"),
    "rejected_mcq": ("rejected_mcq", "mcq_rejected"),
    "prompt_open": ("prompt_open", "prompt_open_ended", "open_prompt"),
    "chosen_open": ("chosen_open", "chosen_open_ended", "open_chosen"),
    "rejected_open": ("rejected_open", "rejected_open_ended", "open_rejected"),
    "status": ("localization_status", "localization", "setting"),
    "country": ("country",),
    "language": ("language_code", "language", "lang"),
    "question_id": ("question_id", "qid"),
    "topic": ("topic", "main_topic"),
    "choices": ("choices", "options"),
    "country_mapping": ("country_mapping", "option_countries"),
    "answer_choice": ("answer_choice",),
}
_LETTER_PREFIX = re.compile(r"^\s*\(?([A-Z])\)?(?:[.):]\s*(.*))?\s*$", re.DOTALL)


@dataclass
class PaperDataset:
    """What :func:`load_paper_hub_dataset` found (see the module docstring)."""

    mcq: list[CulturalMCQ] = field(default_factory=list)
    open: list[OpenQuestion] = field(default_factory=list)
    pairs: list[PreferencePair] = field(default_factory=list)

    def pairs_of(self, kind: str) -> list[PreferencePair]:
        """The ``"mcq"`` or ``"open"`` pairs."""
        return [p for p in self.pairs if p.metadata.get("kind") == kind]


@dataclass
class _ParsedRow:
    row: Row
    status: Setting
    fields: dict[str, Any]
    question: str | None = None
    options: list[str] | None = None
    answer: int | None = None
    countries: list[str] | None = None
    pairs: list[PreferencePair] = field(default_factory=list)


def _canonical(name: str) -> str:
    return re.sub(r"[\s\-]+", "_", name.strip().lower())


def _field_names(columns: Sequence[str]) -> dict[str, str]:
    """Our field name → the source column that holds it."""
    by_canonical = {_canonical(c): c for c in columns}
    found = {}
    for name, aliases in _ALIASES.items():
        for alias in aliases:
            if alias in by_canonical:
                found[name] = by_canonical[alias]
                break
    return found


def normalize_status(value: str) -> Setting | None:
    """``localized``/``nonlocalized`` from the spellings people use, else ``None``."""
    letters = re.sub(r"[^a-z]", "", value.lower())
    if letters in ("localized", "localised", "local", "loc"):
        return "localized"
    if letters.startswith(("non", "not", "un")) and "local" in letters:
        return "nonlocalized"
    return None


def _letter_list(value: Any) -> list[str] | None:
    """A ``{"A": x, "B": y}`` mapping or a list as a list in letter order."""
    if isinstance(value, Mapping):
        items = [(str(k).strip().upper(), v) for k, v in value.items()]
        items = [(k, v) for k, v in items if v not in (None, "")]
        items.sort(key=lambda kv: kv[0])
        if [k for k, _ in items] != list(ANSWER_LETTERS[: len(items)]):
            return None
        return [str(v).strip() for _, v in items]
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return [v.strip() for v in value if v.strip()]
    return None


def _resolve_option(answer: str, options: list[str]) -> int | None:
    """The option an answer refers to: by letter, by ``letter. text``, or by its text."""
    match = _LETTER_PREFIX.match(answer)
    if match:
        index = ANSWER_LETTERS.index(match.group(1))
        tail = (match.group(2) or "").strip()
        if index < len(options) and (
            not tail or normalize_text(tail).lower() == normalize_text(options[index]).lower()
        ):
            return index
    wanted = normalize_text(answer).lower()
    hits = [i for i, o in enumerate(options) if normalize_text(o).lower() == wanted]
    return hits[0] if len(hits) == 1 else None


def _parse_mcq(parsed: _ParsedRow) -> None:
    """Fill question/options/answer/countries of a row when its MCQ can be read."""
    prompt = parsed.fields.get("prompt_mcq") or ""
    options = _letter_list(parsed.row.data.get(parsed.fields.get("choices_column", "")))
    split = parse_mcq_prompt(prompt)
    if options is None and split is not None:
        options = split[1]
    if not options or len(options) < 2:
        return
    question = split[0] if split is not None else prompt.strip()
    answer_source = parsed.fields.get("answer_choice") or parsed.fields.get("chosen_mcq") or ""
    answer = _resolve_option(answer_source, options)
    if answer is None:
        return
    mapping = _letter_list(parsed.row.data.get(parsed.fields.get("mapping_column", "")))
    if mapping is not None and len(mapping) == len(options):
        countries = mapping
    else:
        countries = [UNKNOWN_COUNTRY] * len(options)
        countries[answer] = parsed.fields["country"]
        rejected = _resolve_option(parsed.fields.get("rejected_mcq") or "", options)
        if rejected is not None and rejected != answer:
            countries[rejected] = WESTERN
    parsed.question, parsed.options, parsed.answer, parsed.countries = (
        question,
        options,
        answer,
        countries,
    )


def _read_row(row: Row, names: dict[str, str], report: LoadReport) -> _ParsedRow | None:
    fields: dict[str, Any] = {}
    for name in (
        "prompt_mcq",
        "chosen_mcq",
        "rejected_mcq",
        "prompt_open",
        "chosen_open",
        "rejected_open",
        "status",
        "country",
        "language",
        "question_id",
        "topic",
        "answer_choice",
    ):
        if name not in names:
            continue
        value, error = text_field(row.data, names[name], required=False)
        if error:
            report.bad(row.location, error)
            return None
        fields[name] = value or None
    fields["choices_column"] = names.get("choices", "")
    fields["mapping_column"] = names.get("country_mapping", "")
    if not fields.get("country"):
        report.empty(row.location, "empty country")
        return None
    status = normalize_status(fields.get("status") or "")
    if status is None:
        report.bad(
            row.location,
            f"localization_status must be localized or nonlocalized, got {fields.get('status')!r}",
        )
        return None
    has_mcq = all(fields.get(n) for n in ("prompt_mcq", "chosen_mcq", "rejected_mcq"))
    has_open = all(fields.get(n) for n in ("prompt_open", "chosen_open", "rejected_open"))
    if not has_mcq and not has_open:
        report.empty(row.location, "no complete MCQ or open-ended prompt/chosen/rejected")
        return None
    parsed = _ParsedRow(row=row, status=status, fields=fields)
    if has_mcq:
        _parse_mcq(parsed)
        if parsed.options is None:
            report.warn(row.location, "could not read the MCQ options/answer; pairs only")
    return parsed


def _pairs(parsed: _ParsedRow, seen: DuplicateTracker) -> list[PreferencePair]:
    f = parsed.fields
    out = []
    for kind in ("mcq", "open"):
        prompt, chosen, rejected = (
            f.get(f"prompt_{kind}"),
            f.get(f"chosen_{kind}"),
            f.get(f"rejected_{kind}"),
        )
        if not (prompt and chosen and rejected):
            continue
        key = (
            kind,
            f["country"],
            normalize_text(prompt),
            normalize_text(chosen),
            normalize_text(rejected),
        )
        if seen.earlier(key, parsed.row.location) is not None:
            continue
        out.append(
            PreferencePair(
                prompt=prompt,
                chosen=chosen,
                rejected=rejected,
                id=f"{parsed.row.location}:{kind}",
                question_id=None,  # set once the question's rows are grouped
                country=f["country"],
                language=f.get("language"),
                setting=parsed.status,
                metadata={"kind": kind, "source": parsed.row.location, "split": parsed.row.split},
            )
        )
    return out


def _group_key(parsed: _ParsedRow) -> tuple[str, ...]:
    f = parsed.fields
    if f.get("question_id"):
        return ("qid", f["country"], f.get("language") or "", f["question_id"])
    return (
        "answers",
        f["country"],
        f.get("language") or "",
        normalize_text(f.get("chosen_mcq") or ""),
        normalize_text(f.get("chosen_open") or ""),
    )


def _same_options(a: list[str], b: list[str]) -> bool:
    return sorted(normalize_text(o).lower() for o in a) == sorted(
        normalize_text(o).lower() for o in b
    )


def _combine(number: int, rows: list[_ParsedRow], data: PaperDataset, report: LoadReport) -> None:
    """One MCQ and one open question from a question's localized and non-localized rows.

    Every pair made from these rows gets the question's ``question_id``, so that a
    split by question keeps both forms on the same side.
    """
    first = rows[0].fields
    qid = first.get("question_id") or str(number)
    question_id = f"{first['country']}:{qid}"
    by_status: dict[str, _ParsedRow] = {}
    for parsed in rows:
        for pair in parsed.pairs:
            pair.question_id = question_id
        if parsed.status in by_status:
            report.warn(
                parsed.row.location,
                f"a second {parsed.status} row for this question (first at "
                f"{by_status[parsed.status].row.location}); the first is used",
            )
            continue
        by_status[parsed.status] = parsed
    loc, non = by_status.get("localized"), by_status.get("nonlocalized")
    if loc is None or non is None:
        only = loc or non
        assert only is not None
        missing = "nonlocalized" if non is None else "localized"
        report.warn(only.row.location, f"no {missing} row for this question; not paired")
        return
    f = loc.fields
    language = f.get("language") or "und"
    record_id = f"{question_id}:{language}"
    meta = {"source": [loc.row.location, non.row.location], "split": loc.row.split}
    if loc.options is not None and non.options is not None and non.question is not None:
        assert loc.question is not None and loc.answer is not None
        if _same_options(loc.options, non.options):
            data.mcq.append(
                CulturalMCQ(
                    id=record_id,
                    question_id=question_id,
                    language=language,
                    country=f["country"],
                    localized=loc.question,
                    nonlocalized=non.question,
                    options=loc.options,
                    answer=loc.answer,
                    topic=f.get("topic"),
                    option_countries=loc.countries,
                    metadata=dict(meta),
                )
            )
        else:
            report.warn(
                non.row.location, f"MCQ options differ from {loc.row.location}; no MCQ item"
            )
    if f.get("prompt_open") and non.fields.get("prompt_open") and f.get("chosen_open"):
        data.open.append(
            OpenQuestion(
                id=record_id,
                question_id=question_id,
                language=language,
                country=f["country"],
                localized=f["prompt_open"],
                nonlocalized=non.fields["prompt_open"],
                reference=f["chosen_open"],
                topic=f.get("topic"),
                metadata={**meta, "rejected_reference": f.get("rejected_open")},
            )
        )


def load_paper_hub_dataset(
    path_or_hub_id: str | os.PathLike[str],
    *,
    split: str | None = None,
    config: str | None = None,
    format: str | None = None,
    countries: Sequence[str] | None = None,
    strict: bool = True,
) -> tuple[PaperDataset, LoadReport]:
    """Read the YaPO paper's cultural data (a Hub id, a local dataset folder or a file).

    Every split is read unless ``split`` names one; ``countries`` keeps only those
    countries. See the module docstring for the assumed column semantics.
    """
    table = read_table(
        path_or_hub_id, format=format, split=split, config=config, all_splits=split is None
    )
    data = PaperDataset()
    report = LoadReport(source=table.source)
    for location, message in table.unreadable:
        report.bad(location, message)
    names = _field_names(table.columns)
    missing = [n for n in ("status", "country") if n not in names]
    if table.rows and (missing or not ({"prompt_mcq", "prompt_open"} & set(names))):
        raise YapoError(
            f"{table.source} does not look like the paper's dataset (need country, "
            f"localization_status and prompt-mcq or prompt-open columns); its columns: "
            f"{', '.join(table.columns)}"
        )
    wanted = set(countries) if countries else None
    seen = DuplicateTracker()
    groups: dict[tuple[str, ...], list[_ParsedRow]] = {}
    for row in table.rows:
        parsed = _read_row(row, names, report)
        if parsed is None:
            continue
        if wanted is not None and parsed.fields["country"] not in wanted:
            continue
        parsed.pairs = _pairs(parsed, seen)
        if not parsed.pairs:
            report.duplicate(row.location, "same prompts and answers as an earlier row")
            continue
        report.kept()
        data.pairs.extend(parsed.pairs)
        groups.setdefault(_group_key(parsed), []).append(parsed)
    for number, rows in enumerate(groups.values(), start=1):
        _combine(number, rows, data, report)
    report.check(strict)
    return data, report
