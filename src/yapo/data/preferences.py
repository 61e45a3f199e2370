"""Load preference pairs (prompt, chosen, rejected) from files and Hub datasets.

:func:`load_preferences` reads JSONL, JSON, CSV/TSV, Parquet and Hugging Face datasets
and maps the usual column names onto :class:`PreferencePair`:

========  ==================================================================
prompt    ``prompt``, ``question``, ``instruction``, ``input``, ``query``
chosen    ``chosen``, ``matching``, ``answer_matching_behavior``, ``positive``
rejected  ``rejected``, ``not_matching``, ``answer_not_matching_behavior``, ``negative``
========  ==================================================================

BiPO's files are recognised by their columns: ``question, matching, not_matching``
(``train.csv``/``test.csv``; "matching" is the behaviour the vector steers toward) and
``question, A, B, matching`` (``test_infer.csv``; ``matching`` names the column of the
matching answer). Chat-format cells (a list of ``{"role", "content"}`` messages, as in
UltraFeedback) are reduced to the last assistant message.

Every record is checked (see :mod:`yapo.data.validation`): blank prompts or answers are
skipped as *empty*, repeated ``(prompt, chosen, rejected)`` triples as *duplicate*,
records with stray generation markers or truncated answers as *defective* (see
:mod:`yapo.data.defects`; ``truncated="trim"`` cuts a truncated answer back to its last
full sentence instead, ``"keep"`` keeps it with a warning), and malformed records are
*invalid* (raised together, or skipped with ``strict=False``).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from yapo.data.defects import DEFAULT_MARKERS, find_marker, looks_truncated, trim_to_sentence
from yapo.data.files import Row, Table, read_table
from yapo.data.records import SETTINGS, PreferencePair
from yapo.data.split import split_by_question
from yapo.data.validation import DuplicateTracker, LoadReport, normalize_text, text_field
from yapo.errors import YapoError

__all__ = ["load_preferences", "resolve_columns", "split_by_question"]

Truncation = Literal["skip", "trim", "keep"]
TRUNCATION_POLICIES: tuple[Truncation, ...] = ("skip", "trim", "keep")

PROMPT_COLUMNS = ("prompt", "question", "instruction", "input", "query")
CHOSEN_COLUMNS = (
    "chosen",
    "matching",
    "answer_matching_behavior",
    "positive",
    "chosen_response",
    "response_chosen",
)
REJECTED_COLUMNS = (
    "rejected",
    "not_matching",
    "answer_not_matching_behavior",
    "negative",
    "rejected_response",
    "response_rejected",
)
_RECORD_FIELDS = {"id", "question_id", "country", "language", "setting", "metadata"}
_MCQ_COLUMNS = {"localized", "nonlocalized", "options", "answer"}


@dataclass(frozen=True)
class ColumnMap:
    """Which source columns hold the prompt and the two responses.

    ``kind`` is ``"columns"`` for ordinary files, ``"bipo"`` for BiPO's
    ``question, matching, not_matching`` and ``"bipo_ab"`` for ``question, A, B,
    matching`` (where ``chosen`` names the column that says which of A/B matches).
    """

    prompt: str
    chosen: str
    rejected: str
    kind: Literal["columns", "bipo", "bipo_ab"] = "columns"


def resolve_columns(
    columns: list[str], explicit: Mapping[str, str] | None = None, source: str = "the data"
) -> ColumnMap:
    """Find the prompt/chosen/rejected columns, or raise a message listing what exists."""
    present = set(columns)
    if explicit:
        unknown = set(explicit) - {"prompt", "chosen", "rejected"}
        if unknown:
            raise YapoError(
                f"columns= keys must be prompt/chosen/rejected, got {', '.join(sorted(unknown))}"
            )
    if not explicit and {"question", "A", "B", "matching"} <= present:
        return ColumnMap("question", "matching", "A|B", kind="bipo_ab")
    if not explicit and present >= _MCQ_COLUMNS:
        raise YapoError(
            f"{source} holds cultural MCQs, not preference pairs; turn them into pairs with "
            "mcq_to_preferences() or `yapo data to-pairs`"
        )
    chosen_map: dict[str, str] = {}
    for role, candidates in (
        ("prompt", PROMPT_COLUMNS),
        ("chosen", CHOSEN_COLUMNS),
        ("rejected", REJECTED_COLUMNS),
    ):
        if explicit and role in explicit:
            if explicit[role] not in present:
                raise YapoError(
                    f"column {explicit[role]!r} (for {role}) is not in {source}; "
                    f"its columns: {', '.join(columns) or '(none)'}"
                )
            chosen_map[role] = explicit[role]
            continue
        found = next((c for c in candidates if c in present), None)
        if found is None and role == "prompt" and "chosen" in present:
            found = ""  # chat-format pairs carry the prompt inside the messages
        if found is None:
            raise YapoError(
                f"{source} has no {role} column (looked for {', '.join(candidates)}); its "
                f"columns: {', '.join(columns) or '(none)'}. Rename that column to one of "
                f"those names, or in Python pass load_preferences(..., columns={{'{role}': "
                "'<column>'}})"
            )
        chosen_map[role] = found
    kind: Literal["columns", "bipo"] = (
        "bipo"
        if (chosen_map["prompt"], chosen_map["chosen"], chosen_map["rejected"])
        == ("question", "matching", "not_matching")
        else "columns"
    )
    return ColumnMap(chosen_map["prompt"], chosen_map["chosen"], chosen_map["rejected"], kind)


def _message_text(value: Any, role: str) -> Any:
    """The content of the last ``role`` message of a chat-format cell (else unchanged)."""
    if isinstance(value, list) and value and all(isinstance(m, Mapping) for m in value):
        wanted = [m for m in value if m.get("role") == role] or list(value)
        return wanted[-1].get("content")
    return value


def _cell(row: Row, column: str, role: str) -> tuple[str | None, str | None]:
    if not column:
        return "", None
    value = row.data.get(column)
    if role == "prompt" and isinstance(value, list):
        value = _message_text(value, "user")
    elif role != "prompt":
        value = _message_text(value, "assistant")
    return text_field({column: value}, column)


def _responses(row: Row, columns: ColumnMap) -> tuple[str | None, str | None, str | None]:
    """(chosen, rejected, error) for the row, handling BiPO's A/B layout."""
    if columns.kind != "bipo_ab":
        chosen, error = _cell(row, columns.chosen, "chosen")
        if error:
            return None, None, error
        rejected, error = _cell(row, columns.rejected, "rejected")
        return chosen, rejected, error
    label, error = text_field(row.data, "matching")
    if error or label is None:
        return None, None, error
    cleaned = label.strip("() ").upper()
    if cleaned not in ("A", "B"):
        return None, None, f"'matching' must be A or B, got {label!r}"
    other = "B" if cleaned == "A" else "A"
    chosen, error = text_field(row.data, cleaned)
    if error:
        return None, None, error
    rejected, error = text_field(row.data, other)
    return chosen, rejected, error


def _optional_text(row: Row, name: str) -> tuple[str | None, str | None]:
    value, error = text_field(row.data, name, required=False)
    return (value or None), error


def _metadata(row: Row, columns: ColumnMap) -> tuple[dict[str, Any], str | None]:
    used = {columns.prompt, columns.chosen, columns.rejected, *_RECORD_FIELDS}
    if columns.kind == "bipo_ab":
        used |= {"A", "B"}
    base = row.data.get("metadata")
    if base is not None and not isinstance(base, Mapping):
        return {}, f"field 'metadata' must be an object, got {type(base).__name__}"
    metadata: dict[str, Any] = dict(base or {})
    for key, value in row.data.items():
        if key not in used and isinstance(value, str | int | float | bool) and value != "":
            metadata.setdefault(key, value)
    if columns.kind != "columns":
        metadata.setdefault("format", columns.kind)
    metadata.setdefault("source", row.location)
    return metadata, None


def _find_markers(texts: dict[str, str], markers: re.Pattern[str] | None) -> str | None:
    for name, text in texts.items():
        marker = find_marker(text, markers)
        if marker:
            return f"stray marker {marker!r} in {name}"
    return None


def _row_to_pair(
    row: Row,
    index: int,
    columns: ColumnMap,
    table: Table,
    report: LoadReport,
    seen: DuplicateTracker,
    truncated: Truncation,
    markers: re.Pattern[str] | None,
) -> PreferencePair | None:
    location = row.location
    prompt, error = _cell(row, columns.prompt, "prompt")
    chosen, rejected, error2 = _responses(row, columns) if error is None else (None, None, None)
    error = error or error2
    if error is None and prompt == "" and not columns.prompt and "chosen" in row.data:
        prompt, error = _cell(row, "chosen", "prompt")  # chat format: first user message
    extra: dict[str, str | None] = {}
    for name in ("id", "question_id", "country", "language", "setting"):
        if error is None:
            extra[name], error = _optional_text(row, name)
    metadata, meta_error = _metadata(row, columns)
    error = error or meta_error
    if error is None and extra.get("setting") not in (None, *SETTINGS):
        error = f"setting must be one of {', '.join(SETTINGS)}, got {extra['setting']!r}"
    if error is not None or prompt is None or chosen is None or rejected is None:
        report.bad(location, error or "unreadable record")
        return None
    blank = [
        n for n, t in (("prompt", prompt), ("chosen", chosen), ("rejected", rejected)) if not t
    ]
    if blank:
        report.empty(location, f"empty {', '.join(blank)}")
        return None
    if normalize_text(chosen) == normalize_text(rejected):
        report.bad(location, "chosen and rejected responses are identical")
        return None
    defect = _find_markers({"prompt": prompt, "chosen": chosen, "rejected": rejected}, markers)
    if defect:
        report.defective(location, defect)
        return None
    responses = {"chosen": chosen, "rejected": rejected}
    repairs = []
    for name, text in list(responses.items()):
        if not looks_truncated(text):
            continue
        if truncated == "keep":
            report.warn(location, f"{name} looks truncated ({text[-40:]!r}); kept")
            continue
        fixed = trim_to_sentence(text) if truncated == "trim" else None
        if fixed is None or looks_truncated(fixed):
            how = "and has no complete sentence to keep" if truncated == "trim" else ""
            report.defective(location, f"{name} looks truncated {how}({text[-40:]!r})".strip())
            return None
        responses[name] = fixed
        repairs.append(name)
    chosen, rejected = responses["chosen"], responses["rejected"]
    key = (normalize_text(prompt), normalize_text(chosen), normalize_text(rejected))
    earlier = seen.earlier(key, location)
    if earlier is not None:
        report.duplicate(location, f"same prompt and responses as {earlier}")
        return None
    if repairs:
        report.repaired(location, f"cut {' and '.join(repairs)} back to the last full sentence")
        metadata["trimmed"] = repairs
    report.kept()
    stem = Path(table.source).stem if Path(table.source).suffix else table.source
    return PreferencePair(
        prompt=prompt,
        chosen=chosen,
        rejected=rejected,
        id=extra["id"] or f"{stem}-{index}",
        question_id=extra["question_id"],
        country=extra["country"],
        language=extra["language"],
        setting=extra["setting"],  # type: ignore[arg-type]
        metadata=metadata,
    )


def load_preferences(
    path_or_hub_id: str | os.PathLike[str],
    *,
    format: str | None = None,
    split: str | None = None,
    strict: bool = True,
    columns: Mapping[str, str] | None = None,
    truncated: Truncation = "skip",
    markers: re.Pattern[str] | None = DEFAULT_MARKERS,
    config: str | None = None,
) -> tuple[list[PreferencePair], LoadReport]:
    """Read preference pairs and a :class:`LoadReport` of what was skipped and why.

    ``format`` overrides the suffix-based guess (``jsonl``, ``json``, ``csv``, ``tsv``,
    ``parquet``, ``hf``); ``split``/``config`` select part of a Hugging Face dataset;
    ``columns`` maps ``prompt``/``chosen``/``rejected`` to column names when they are
    not the usual ones; ``truncated`` is ``"skip"`` (default), ``"trim"`` or ``"keep"``;
    ``markers`` is the regular expression of stray markers (``None`` disables the check).
    Records without an ``id`` get ``<file stem>-<n>`` (n = 1-based record number).
    """
    if truncated not in TRUNCATION_POLICIES:
        raise YapoError(f"truncated must be one of {', '.join(TRUNCATION_POLICIES)}")
    table = read_table(path_or_hub_id, format=format, split=split, config=config)
    report = LoadReport(source=table.source)
    for location, message in table.unreadable:
        report.bad(location, message)
    if not table.rows:
        report.check(strict)
        return [], report
    column_map = resolve_columns(table.columns, columns, table.source)
    seen = DuplicateTracker()
    pairs = []
    for index, row in enumerate(table.rows, start=1):
        pair = _row_to_pair(row, index, column_map, table, report, seen, truncated, markers)
        if pair is not None:
            pairs.append(pair)
    report.check(strict)
    return pairs, report
