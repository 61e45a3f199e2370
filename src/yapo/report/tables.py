"""Result tables in the shape of the paper's Tables 1–3, as JSON and as Markdown.

* Table 1 — MCQ accuracy (%) per country, language average and overall average, for
  each condition (no steering, then each vector), localized / non-localized / mixed.
* Table 2 — open-ended judge scores (0–10), same rows and columns.
* Table 3 — RCA (%, higher is better) and PNLG (lower is better), for MCQ and, when
  there are open-ended results, for open-ended answers.

The JSON keeps every cell's point value and 95% bootstrap interval on the raw scale
([0, 1] for accuracies, judge scores / 10, RCA; PNLG as is) plus the factor the Markdown
multiplies by, so a table can be re-rendered or re-plotted without re-running anything.
The Markdown shows point values in the big tables and the intervals in a compact
"overall" table per metric family.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from yapo.evaluate.metrics import MetricsSummary

LABELS = {
    "localized": "Loc",
    "nonlocalized": "Non-loc",
    "mixed": "Mixed",
    "rca": "RCA",
    "pnlg": "PNLG",
}


@dataclass(frozen=True)
class _Spec:
    key: str
    title: str
    columns: tuple[tuple[str, str], ...]  # (source, metric)


_SPECS = (
    _Spec(
        "table1",
        "Table 1 — MCQ accuracy (%)",
        (("mcq", "localized"), ("mcq", "nonlocalized"), ("mcq", "mixed")),
    ),
    _Spec(
        "table2",
        "Table 2 — open-ended judge score (0–10)",
        (("open", "localized"), ("open", "nonlocalized"), ("open", "mixed")),
    ),
    _Spec(
        "table3",
        "Table 3 — RCA (%, higher is better) and PNLG (lower is better)",
        (("mcq", "rca"), ("mcq", "pnlg"), ("open", "rca"), ("open", "pnlg")),
    ),
)


def _metric_label(source: str, metric: str) -> str:
    """``Loc``/``Non-loc``/``Mixed`` for scores; ``MCQ RCA``, ``open PNLG``, ... for gaps."""
    if metric in ("rca", "pnlg"):
        return f"{'MCQ' if source == 'mcq' else 'open'} {LABELS[metric]}"
    return LABELS[metric]


def _scale(source: str, metric: str) -> float:
    if metric == "pnlg":
        return 1.0
    if source == "open" and metric != "rca":
        return 10.0
    return 100.0


def _digits(scale: float) -> int:
    return 1 if scale == 100.0 else (2 if scale == 10.0 else 3)


def build_tables(
    mcq: Mapping[str, MetricsSummary] | None = None,
    open_ended: Mapping[str, MetricsSummary] | None = None,
) -> dict[str, Any]:
    """Tables 1–3 (those with data) as JSON-ready dicts; keys are condition names."""
    sources = {"mcq": dict(mcq or {}), "open": dict(open_ended or {})}
    tables: dict[str, Any] = {}
    for spec in _SPECS:
        columns = [
            (condition, source, metric)
            for source_wanted in ("mcq", "open")
            for condition in sources[source_wanted]
            for source, metric in spec.columns
            if source == source_wanted
        ]
        if not columns:
            continue
        # Group columns by condition first so that each condition's block is contiguous.
        conditions = list(dict.fromkeys(c for c, _, _ in columns))
        columns = [col for cond in conditions for col in columns if col[0] == cond]
        tables[spec.key] = {
            "title": spec.title,
            "columns": [
                {
                    "condition": condition,
                    "source": source,
                    "metric": metric,
                    "label": f"{condition} · {_metric_label(source, metric)}",
                    "scale": _scale(source, metric),
                }
                for condition, source, metric in columns
            ],
            "rows": _rows(columns, sources),
            "settings": _settings(columns, sources),
        }
    return tables


def _settings(
    columns: list[tuple[str, str, str]], sources: dict[str, dict[str, MetricsSummary]]
) -> dict[str, Any]:
    for _condition, source, _metric in columns:
        summaries = sources[source]
        if summaries:
            return dict(next(iter(summaries.values())).settings)
    return {}


def _rows(
    columns: list[tuple[str, str, str]], sources: dict[str, dict[str, MetricsSummary]]
) -> list[dict[str, Any]]:
    order: list[tuple[str, str | None, str | None]] = []
    n_items: dict[tuple[str, str | None, str | None], int] = {}
    for _condition, source, _metric in columns:
        for summary in sources[source].values():
            for row in summary.rows:
                key = (row.level, row.language, row.country)
                if key not in n_items:
                    order.append(key)
                n_items[key] = max(n_items.get(key, 0), row.n_items)
    languages = sorted({lang for level, lang, _ in order if level != "overall" and lang})
    ordered = []
    for lang in languages:
        ordered += sorted(k for k in order if k[0] == "country" and k[1] == lang)
        ordered += [k for k in order if k[0] == "language" and k[1] == lang]
    ordered += [k for k in order if k[0] == "overall"]
    rows = []
    for level, language, country in ordered:
        cells: dict[str, Any] = {}
        for condition, source, metric in columns:
            found = sources[source].get(condition)
            cell = None
            if found is not None:
                for row in found.rows:
                    if (row.level, row.language, row.country) == (level, language, country):
                        cell = row.metrics[metric].to_json()
            cells[f"{condition}|{source}|{metric}"] = cell
        rows.append(
            {
                "level": level,
                "language": language,
                "country": country,
                "n_items": n_items[(level, language, country)],
                "cells": cells,
            }
        )
    return rows


def _fmt(value: float | None, scale: float) -> str:
    if value is None or not math.isfinite(value):
        return "–"
    return f"{value * scale:.{_digits(scale)}f}"


def _row_label(row: Mapping[str, Any]) -> tuple[str, str]:
    if row["level"] == "overall":
        return "**all**", "**average**"
    if row["level"] == "language":
        return f"**{row['language']}**", "*average*"
    return str(row["language"]), str(row["country"])


def table_markdown(table: Mapping[str, Any]) -> str:
    """One table as Markdown (point values; intervals are in :func:`overall_markdown`)."""
    columns = table["columns"]
    header = ["Language", "Country", "n", *[c["label"] for c in columns]]
    lines = [
        f"### {table['title']}",
        "",
        "n = items per row (each asked in its localized and non-localized form); "
        "averages are unweighted means over countries.",
        "",
        _line(header),
        _line(["---"] * len(header)),
    ]
    for row in table["rows"]:
        language, country = _row_label(row)
        cells = []
        for column in columns:
            cell = row["cells"].get(f"{column['condition']}|{column['source']}|{column['metric']}")
            cells.append(_fmt(cell["value"] if cell else None, column["scale"]))
        lines.append(_line([language, country, str(row["n_items"]), *cells]))
    return "\n".join(lines)


def overall_markdown(table: Mapping[str, Any]) -> str:
    """The overall row of a table, one line per condition, with 95% intervals."""
    columns = table["columns"]
    overall = next((r for r in table["rows"] if r["level"] == "overall"), None)
    if overall is None:
        return ""
    metrics = list(dict.fromkeys((c["source"], c["metric"]) for c in columns))
    conditions = list(dict.fromkeys(c["condition"] for c in columns))
    confidence = table.get("settings", {}).get("confidence", 0.95)
    header = ["Condition", *[_metric_label(s, m) for s, m in metrics]]
    lines = [
        f"Overall, with {confidence:.0%} bootstrap intervals:",
        "",
        _line(header),
        _line(["---"] * len(header)),
    ]
    for condition in conditions:
        cells = []
        for source, metric in metrics:
            scale = _scale(source, metric)
            cell = overall["cells"].get(f"{condition}|{source}|{metric}")
            if not cell:
                cells.append("–")
                continue
            text = _fmt(cell["value"], scale)
            if cell.get("low") is not None and cell.get("high") is not None:
                text += f" [{_fmt(cell['low'], scale)}, {_fmt(cell['high'], scale)}]"
            cells.append(text)
        lines.append(_line([condition, *cells]))
    return "\n".join(lines)


def tables_markdown(tables: Mapping[str, Any]) -> str:
    """All tables, each followed by its overall-with-intervals summary."""
    parts = []
    for key in ("table1", "table2", "table3"):
        if key in tables:
            parts.append(table_markdown(tables[key]))
            parts.append(overall_markdown(tables[key]))
    return "\n\n".join(p for p in parts if p) + "\n"


def _line(cells: list[str]) -> str:
    return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"
