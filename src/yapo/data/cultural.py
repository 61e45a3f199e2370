"""Cultural MCQs and open questions in our schema, and MCQs turned into preference pairs.

Files hold one record per row with the fields of :class:`CulturalMCQ` or
:class:`OpenQuestion` (``records.py``): JSONL/JSON/Parquet/Hugging Face datasets store
``options``/``option_countries`` as lists and ``metadata`` as an object; CSV cells
hold them as JSON text (``["Ful medames", "Pancakes"]``), or the options may be spread
over columns ``option_0``, ``option_1``, .... ``answer`` is a 0-based index or a letter.
A missing ``question_id`` defaults to ``id``; a missing ``id`` to
``<question_id>-<language>`` (or ``<file stem>-<n>``).

:func:`mcq_to_preferences` makes training pairs from MCQs. The prompt is the question
(localized and/or non-localized) with its lettered options (:func:`format_mcq_prompt`),
``chosen`` is the correct option and ``rejected`` is the Western option
(``policy="western"``), each other country's option (``"other_country"``) or every wrong
option (``"all"``). The responses are the option *text* by default; ``response="letter"``
gives the answer letter (what an MCQ scorer reads) and ``"letter_text"`` gives
``"B. Couscous"``.

The loader of the YaPO paper's Hub dataset lives in :mod:`yapo.data.paper` and is
re-exported here as :func:`load_paper_hub_dataset`.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from yapo.data.files import Row, Table, read_table
from yapo.data.paper import PaperDataset, load_paper_hub_dataset
from yapo.data.prompts import McqStyle, answer_index, answer_letter, format_mcq_prompt
from yapo.data.records import SETTINGS, CulturalMCQ, OpenQuestion, PreferencePair, Setting
from yapo.data.validation import DuplicateTracker, LoadReport, normalize_text, text_field
from yapo.errors import YapoError

__all__ = [
    "PaperDataset",
    "load_mcq",
    "load_open",
    "load_paper_hub_dataset",
    "mcq_to_preferences",
]

logger = logging.getLogger(__name__)

Policy = Literal["western", "other_country", "all", "model"]
POLICIES: tuple[Policy, ...] = ("western", "other_country", "all", "model")
# policy "model": (item id, setting) -> the model's preferred wrong option, from
# yapo.evaluate.preferred.model_preferred_wrong (the data layer cannot score)
ModelChoices = Mapping[tuple[str, str], int]
ResponseForm = Literal["text", "letter", "letter_text"]
RESPONSE_FORMS: tuple[ResponseForm, ...] = ("text", "letter", "letter_text")
_OPTION_COLUMN = re.compile(r"^option_(\d+)$")


class _Invalid(Exception):
    """A record-level problem (caught and reported, never escapes this module)."""


def _text(row: Row, name: str, required: bool = True) -> str | None:
    value, error = text_field(row.data, name, required=required)
    if error:
        raise _Invalid(error)
    return value or (None if not required else "")


def _json_cell(value: Any, name: str) -> Any:
    """Lists/objects stored as JSON text (CSV cells) decoded; other values unchanged."""
    if isinstance(value, str):
        stripped = value.strip()
        if not stripped:
            return None
        try:
            return json.loads(stripped)
        except json.JSONDecodeError as exc:
            raise _Invalid(f"field {name!r} is not valid JSON ({exc.msg})") from exc
    return value


def _string_list(row: Row, name: str) -> list[str] | None:
    value = _json_cell(row.data.get(name), name)
    if value is None and name == "options":
        numbered = sorted(
            (int(m.group(1)), key) for key in row.data if (m := _OPTION_COLUMN.match(key))
        )
        value = [row.data[key] for _, key in numbered if row.data[key] not in (None, "")] or None
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise _Invalid(f"field {name!r} must be a list of strings")
    return [v.strip() for v in value]


def _answer(row: Row, n_options: int) -> int:
    value = row.data.get("answer")
    if isinstance(value, bool) or value is None or value == "":
        raise _Invalid("field 'answer' is missing (an option index or letter)")
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, str):
        stripped = value.strip()
        value = int(stripped) if stripped.lstrip("-").isdigit() else stripped
    if isinstance(value, str):
        try:
            value = answer_index(value)
        except YapoError as exc:
            raise _Invalid(f"field 'answer': {exc}") from None
    if not isinstance(value, int):
        raise _Invalid(f"field 'answer' must be an index or a letter, got {value!r}")
    if not 0 <= value < n_options:
        raise _Invalid(f"answer {value} is out of range for {n_options} options")
    return value


def _metadata(row: Row) -> dict[str, Any]:
    value = _json_cell(row.data.get("metadata"), "metadata")
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise _Invalid("field 'metadata' must be an object")
    return value


def _ids(row: Row, language: str, stem: str, index: int) -> tuple[str, str]:
    record_id = _text(row, "id", required=False)
    question_id = _text(row, "question_id", required=False)
    if record_id is None:
        record_id = f"{question_id}-{language}" if question_id else f"{stem}-{index}"
    return record_id, question_id or record_id


def _common(row: Row, stem: str, index: int, report: LoadReport) -> dict[str, Any] | None:
    """Fields shared by MCQs and open questions; ``None`` after reporting an empty row."""
    metadata = _metadata(row)
    texts = {n: _text(row, n) or "" for n in ("language", "country", "localized", "nonlocalized")}
    blank = [n for n, t in texts.items() if not t]
    if blank:
        report.empty(row.location, f"empty {', '.join(blank)}")
        return None
    record_id, question_id = _ids(row, texts["language"], stem, index)
    if normalize_text(texts["localized"]) == normalize_text(texts["nonlocalized"]):
        report.warn(row.location, "localized and nonlocalized questions are identical")
    return {
        "id": record_id,
        "question_id": question_id,
        **texts,
        "topic": _text(row, "topic", required=False),
        "metadata": metadata,
    }


def _mcq_from_row(row: Row, stem: str, index: int, report: LoadReport) -> CulturalMCQ | None:
    fields = _common(row, stem, index, report)
    if fields is None:
        return None
    options = _string_list(row, "options")
    if not options:
        report.empty(row.location, "no options")
        return None
    if len(options) < 2:
        raise _Invalid(f"an MCQ needs at least 2 options, got {len(options)}")
    if any(not o for o in options):
        raise _Invalid("an option is blank")
    if len({normalize_text(o).lower() for o in options}) != len(options):
        raise _Invalid("two options have the same text")
    countries = _string_list(row, "option_countries")
    if countries is not None and len(countries) != len(options):
        raise _Invalid(f"{len(countries)} option_countries for {len(options)} options")
    return CulturalMCQ(
        options=options, answer=_answer(row, len(options)), option_countries=countries, **fields
    )


def _open_from_row(row: Row, stem: str, index: int, report: LoadReport) -> OpenQuestion | None:
    fields = _common(row, stem, index, report)
    if fields is None:
        return None
    reference = _text(row, "reference") or ""
    if not reference:
        report.empty(row.location, "empty reference")
        return None
    return OpenQuestion(reference=reference, **fields)


def _content_key(record: CulturalMCQ | OpenQuestion) -> tuple[Any, ...]:
    body = (
        (tuple(record.options), record.answer)
        if isinstance(record, CulturalMCQ)
        else (record.reference,)
    )
    return (record.language, record.country, record.localized, record.nonlocalized, *body)


def _load(table: Table, kind: Literal["mcq", "open"], strict: bool) -> tuple[list[Any], LoadReport]:
    report = LoadReport(source=table.source)
    for location, message in table.unreadable:
        report.bad(location, message)
    stem = Path(table.source).stem
    make = _mcq_from_row if kind == "mcq" else _open_from_row
    by_content = DuplicateTracker()
    by_id: dict[str, tuple[str, tuple[Any, ...]]] = {}
    records: list[Any] = []
    for index, row in enumerate(table.rows, start=1):
        try:
            record = make(row, stem, index, report)
        except _Invalid as exc:
            report.bad(row.location, str(exc))
            continue
        if record is None:
            continue
        key = _content_key(record)
        earlier = by_content.earlier(key, row.location)
        if earlier is not None:
            report.duplicate(row.location, f"same question and answers as {earlier}")
            continue
        if record.id in by_id:
            report.bad(row.location, f"id {record.id!r} is already used at {by_id[record.id][0]}")
            continue
        by_id[record.id] = (row.location, key)
        report.kept()
        records.append(record)
    report.check(strict)
    return records, report


def load_mcq(
    path_or_hub_id: str | os.PathLike[str],
    *,
    format: str | None = None,
    split: str | None = None,
    config: str | None = None,
    strict: bool = True,
) -> tuple[list[CulturalMCQ], LoadReport]:
    """Read cultural MCQs in our schema (see the module docstring) with a report."""
    table = read_table(path_or_hub_id, format=format, split=split, config=config)
    return _load(table, "mcq", strict)


def load_open(
    path_or_hub_id: str | os.PathLike[str],
    *,
    format: str | None = None,
    split: str | None = None,
    config: str | None = None,
    strict: bool = True,
) -> tuple[list[OpenQuestion], LoadReport]:
    """Read open-ended cultural questions in our schema with a report."""
    table = read_table(path_or_hub_id, format=format, split=split, config=config)
    return _load(table, "open", strict)


def _rejected_indices(
    item: CulturalMCQ, policy: Policy, setting: str, model_choices: ModelChoices | None
) -> list[int]:
    western = item.western_index
    wrong = [i for i in range(len(item.options)) if i != item.answer]
    if policy == "model":
        assert model_choices is not None
        choice = model_choices.get((item.id, setting))
        return [choice] if choice is not None and choice != item.answer else []
    if policy == "western":
        return [western] if western is not None and western != item.answer else []
    if policy == "other_country":
        return [i for i in wrong if i != western]
    return wrong


def _response(item: CulturalMCQ, index: int, form: ResponseForm) -> str:
    if form == "letter":
        return answer_letter(index)
    if form == "letter_text":
        return f"{answer_letter(index)}. {item.options[index]}"
    return item.options[index]


def mcq_to_preferences(
    items: Iterable[CulturalMCQ],
    policy: Policy = "western",
    settings: Sequence[Setting] = SETTINGS,
    *,
    style: McqStyle = "letters",
    response: ResponseForm = "text",
    model_choices: ModelChoices | None = None,
) -> list[PreferencePair]:
    """Preference pairs from MCQs: chosen = the correct option, rejected per ``policy``.

    One pair per item, setting and rejected option, with ``question_id``, ``country``,
    ``language`` and ``setting`` copied so that :func:`split_by_question` keeps an
    item's pairs together. Items without a usable rejected option (no Western option
    under ``"western"``) are left out and counted in a log warning. Policy ``"model"``
    rejects the option the model itself prefers among the wrong ones, in each setting
    (as the paper's data preparation rejects the model's own sampled answers): pass
    ``model_choices`` from :func:`yapo.evaluate.preferred.model_preferred_wrong`.
    """
    if policy not in POLICIES:
        raise YapoError(f"policy must be one of {', '.join(POLICIES)}, got {policy!r}")
    if policy == "model" and model_choices is None:
        raise YapoError(
            "policy 'model' needs the model's preferred wrong options (model_choices=...; "
            "on the command line: --policy model --model NAME)"
        )
    if response not in RESPONSE_FORMS:
        raise YapoError(f"response must be one of {', '.join(RESPONSE_FORMS)}")
    bad_settings = [s for s in settings if s not in SETTINGS]
    if bad_settings or not settings:
        raise YapoError(f"settings must be among {', '.join(SETTINGS)}, got {list(settings)}")
    pairs: list[PreferencePair] = []
    without = 0
    items_seen = list(items)  # read twice: here, and to say why items were left out
    for item in items_seen:
        by_setting = {s: _rejected_indices(item, policy, s, model_choices) for s in settings}
        if not any(by_setting.values()):
            without += 1
            continue
        for setting in settings:
            prompt = format_mcq_prompt(item.question(setting), item.options, style)
            for index in by_setting[setting]:
                label = (item.option_countries or [])[index : index + 1] or ["?"]
                pairs.append(
                    PreferencePair(
                        prompt=prompt,
                        chosen=_response(item, item.answer, response),
                        rejected=_response(item, index, response),
                        id=f"{item.id}:{setting}:{answer_letter(index)}",
                        question_id=item.question_id,
                        country=item.country,
                        language=item.language,
                        setting=setting,
                        metadata={
                            "mcq_id": item.id,
                            "answer": answer_letter(item.answer),
                            "rejected_option": answer_letter(index),
                            "rejected_country": label[0],
                            "topic": item.topic,
                        },
                    )
                )
    if without:
        from yapo.data.validation import rejected_option_census

        census = rejected_option_census(items_seen, policy)
        logger.warning("%s", census.summary() if census.left_out else f"{without} left out")
    return pairs
