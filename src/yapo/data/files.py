"""Read tabular records from the places users keep them, and write JSONL back.

One reader for every loader, so that JSONL, JSON, CSV/TSV, Parquet and Hugging Face
datasets (a Hub id or a local folder) all come back the same way: a list of rows, each a
``dict`` with the location a person needs to find it (``file.csv:411``). Rows that
cannot even be parsed (a JSONL line that is not JSON, a CSV row with the wrong number of
cells) are returned separately as ``(location, message)`` so the loader can report them
together with the records it rejects for other reasons.

Parquet needs ``pyarrow`` and Hub datasets need ``datasets`` (``pip install
'yapo[datasets]'``); both are imported only when such a source is read.
"""

from __future__ import annotations

import csv
import json
import math
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

from yapo._io import write_text
from yapo.errors import YapoError

Format = Literal["jsonl", "json", "csv", "tsv", "parquet", "hf"]
FORMATS: tuple[Format, ...] = ("jsonl", "json", "csv", "tsv", "parquet", "hf")
_SUFFIXES: dict[str, Format] = {
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "json",
    ".csv": "csv",
    ".tsv": "tsv",
    ".parquet": "parquet",
    ".pq": "parquet",
}
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")
_INSTALL_DATASETS = "pip install 'yapo[datasets]'"


@dataclass
class Row:
    """One record as read: its fields and where it came from."""

    location: str
    data: dict[str, Any]
    split: str | None = None


@dataclass
class Table:
    """All rows of one source, its column names, and rows that failed to parse."""

    source: str
    columns: list[str]
    rows: list[Row] = field(default_factory=list)
    unreadable: list[tuple[str, str]] = field(default_factory=list)


class _ToJson(Protocol):
    def to_json(self) -> dict[str, Any]: ...


def detect_format(path_or_hub_id: str | os.PathLike[str], format: str | None = None) -> Format:
    """The format of a source: explicit, from the file suffix, a folder, or a Hub id."""
    if format is not None:
        if format not in FORMATS:
            raise YapoError(f"unknown data format {format!r}; use one of {', '.join(FORMATS)}")
        return format
    path = Path(path_or_hub_id)
    if path.is_dir():
        return "hf"
    suffix = path.suffix.lower()
    if path.is_file():
        if suffix in _SUFFIXES:
            return _SUFFIXES[suffix]
        raise YapoError(
            f"cannot tell the format of {path} from its suffix {suffix!r}; pass format= "
            f"(--format) as one of {', '.join(FORMATS)}"
        )
    text = str(path_or_hub_id)
    if suffix in _SUFFIXES or not _HUB_ID.match(text):
        raise YapoError(f"no such file or folder: {text}")
    return "hf"


def read_table(
    path_or_hub_id: str | os.PathLike[str],
    *,
    format: str | None = None,
    split: str | None = None,
    config: str | None = None,
    all_splits: bool = False,
) -> Table:
    """Read every row of a source.

    ``split`` picks one split of a Hugging Face dataset with several; without it a
    dataset with a single split is read, ``all_splits=True`` reads them all (each row
    then knows its split), and otherwise the error lists the splits to choose from.
    """
    fmt = detect_format(path_or_hub_id, format)
    if fmt == "hf":
        return _read_hf(str(path_or_hub_id), split=split, config=config, all_splits=all_splits)
    path = Path(path_or_hub_id)
    if not path.is_file():
        raise YapoError(f"no such file: {path}")
    if split is not None:
        raise YapoError(f"split={split!r} only applies to Hugging Face datasets, not {path}")
    try:
        if fmt == "jsonl":
            return _read_jsonl(path)
        if fmt == "json":
            return _read_json(path)
        if fmt in ("csv", "tsv"):
            return _read_csv(path, delimiter="\t" if fmt == "tsv" else ",")
        return _read_parquet(path)
    except UnicodeDecodeError as exc:
        raise YapoError(f"{path} is not UTF-8 text ({exc.reason} at byte {exc.start})") from exc


def _columns(rows: Iterable[Row]) -> list[str]:
    seen: dict[str, None] = {}
    for row in rows:
        for key in row.data:
            seen.setdefault(key, None)
    return list(seen)


def _read_jsonl(path: Path) -> Table:
    table = Table(source=str(path), columns=[])
    with open(path, encoding="utf-8-sig") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            location = f"{path}:{number}"
            try:
                value = json.loads(line)
            except json.JSONDecodeError as exc:
                table.unreadable.append((location, f"not valid JSON ({exc.msg})"))
                continue
            if not isinstance(value, dict):
                table.unreadable.append(
                    (location, f"expected a JSON object, got {type(value).__name__}")
                )
                continue
            table.rows.append(Row(location, value))
    table.columns = _columns(table.rows)
    return table


def _read_json(path: Path) -> Table:
    try:
        value = json.loads(path.read_text(encoding="utf-8-sig"))
    except json.JSONDecodeError as exc:
        raise YapoError(
            f"{path}:{exc.lineno}: not valid JSON ({exc.msg}); a file with one JSON object "
            "per line should be named .jsonl"
        ) from exc
    if isinstance(value, dict):
        lists = [
            k for k in ("data", "records", "rows", "examples") if isinstance(value.get(k), list)
        ]
        if not lists:
            raise YapoError(
                f"{path}: expected a JSON list of records (or an object with a 'data' list)"
            )
        value = value[lists[0]]
    if not isinstance(value, list):
        raise YapoError(f"{path}: expected a JSON list of records, got {type(value).__name__}")
    table = Table(source=str(path), columns=[])
    for index, item in enumerate(value, start=1):
        location = f"{path}:item {index}"
        if isinstance(item, dict):
            table.rows.append(Row(location, item))
        else:
            table.unreadable.append((location, f"expected an object, got {type(item).__name__}"))
    table.columns = _columns(table.rows)
    return table


def _read_csv(path: Path, delimiter: str) -> Table:
    table = Table(source=str(path), columns=[])
    with open(path, encoding="utf-8-sig", newline="") as handle:
        reader = csv.reader(handle, delimiter=delimiter)
        try:
            header = next(reader)
        except StopIteration:
            return table
        table.columns = [name.strip() for name in header]
        while True:
            start = reader.line_num + 1
            try:
                cells = next(reader)
            except StopIteration:
                break
            except csv.Error as exc:
                table.unreadable.append((f"{path}:{start}", f"unreadable CSV ({exc})"))
                continue
            location = f"{path}:{start}"
            if not any(cell.strip() for cell in cells):
                continue  # a blank line, not a record
            if len(cells) != len(table.columns):
                table.unreadable.append(
                    (location, f"expected {len(table.columns)} cells, found {len(cells)}")
                )
                continue
            data = {name: cell for name, cell in zip(table.columns, cells) if name}
            table.rows.append(Row(location, data))
    return table


def _plain(value: Any) -> Any:
    """Arrow/NumPy scalars and NaN turned into plain Python values."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if hasattr(value, "tolist") and not isinstance(value, str | bytes):
        return _plain(value.tolist())
    return value


def _read_parquet(path: Path) -> Table:
    try:
        import pyarrow.parquet as pq
    except ImportError as exc:
        raise YapoError(
            f"reading {path} needs the optional package 'pyarrow' (pip install pyarrow)"
        ) from exc
    try:
        # one thread: data files here are small, and Arrow's pool threads can outlive the
        # read and abort the process at exit (apache/arrow#34314)
        arrow = pq.read_table(path, use_threads=False)
    except Exception as exc:  # pyarrow raises several unrelated types for bad files
        raise YapoError(f"{path} is not a readable Parquet file: {exc}") from exc
    table = Table(source=str(path), columns=list(arrow.column_names))
    for index, record in enumerate(arrow.to_pylist(), start=1):
        table.rows.append(Row(f"{path}:row {index}", _plain(record)))
    return table


def _import_datasets(what: str) -> Any:
    try:
        import datasets
    except ImportError as exc:
        raise YapoError(
            f"reading {what} as a Hugging Face dataset needs the optional package "
            f"'datasets' ({_INSTALL_DATASETS})"
        ) from exc
    return datasets


def _read_hf(ref: str, *, split: str | None, config: str | None, all_splits: bool) -> Table:
    datasets = _import_datasets(ref)
    path = Path(ref)
    try:
        if path.is_dir() and any(
            (path / name).exists()
            for name in ("dataset_info.json", "state.json", "dataset_dict.json")
        ):
            loaded = datasets.load_from_disk(str(path))  # written by save_to_disk
        else:
            loaded = datasets.load_dataset(ref, config)  # Hub id or a folder of data files
    except Exception as exc:  # network, missing dataset, bad files: all user-facing
        where = "folder" if path.is_dir() else "Hub dataset"
        raise YapoError(f"could not load the {where} {ref!r}: {exc}") from exc
    if isinstance(loaded, Mapping):  # a DatasetDict
        names = list(loaded)
        if split is not None:
            if split not in loaded:
                raise YapoError(f"{ref} has no split {split!r}; its splits: {', '.join(names)}")
            chosen = [split]
        elif all_splits or len(names) == 1:
            chosen = names
        else:
            raise YapoError(
                f"{ref} has several splits ({', '.join(names)}); choose one with split= (--split)"
            )
        parts: list[tuple[str | None, Any]] = [(name, loaded[name]) for name in chosen]
    else:
        if split is not None and getattr(loaded, "split", None) not in (None, split):
            raise YapoError(f"{ref} holds only the split {loaded.split!r}, not {split!r}")
        parts = [(split, loaded)]
    table = Table(source=ref, columns=[])
    for name, dataset in parts:
        label = f"{ref}[{name}]" if name else ref
        for index, record in enumerate(dataset, start=1):
            table.rows.append(Row(f"{label}:row {index}", _plain(dict(record)), split=name))
        for column in dataset.column_names:
            if column not in table.columns:
                table.columns.append(column)
    return table


def write_jsonl(
    path: str | os.PathLike[str], records: Iterable[_ToJson | Mapping[str, Any]]
) -> int:
    """Write records (dataclasses with ``to_json`` or dicts) as JSONL, atomically.

    Returns the number of lines written. Non-ASCII text is kept as is (UTF-8), so Arabic
    and Spanish questions stay readable in the file.
    """
    lines = []
    for record in records:
        data = record if isinstance(record, Mapping) else record.to_json()
        lines.append(json.dumps(dict(data), ensure_ascii=False))
    write_text(path, "".join(line + "\n" for line in lines))
    return len(lines)
