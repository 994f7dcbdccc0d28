"""Readers for local task data, chosen by file type; each yields raw rows, unvalidated.

Text files are decoded as UTF-8 with ``surrogateescape``, so a record with undecodable bytes
still parses and validation can name the record and field instead of failing the whole file.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tasks.errors import DataError

FORMATS = {".json": "JSON (an object id -> record, or a list of records)", ".jsonl": "JSON lines",
           ".csv": "CSV with a header row", ".parquet": "Parquet",
           "<folder>": "a Hugging Face dataset saved with save_to_disk"}


@dataclass(frozen=True)
class Row:
    where: str  # "line 3", "row 7", "record 'abc'", used in messages
    values: object  # a mapping of field -> value when the row is well-formed
    key: str | None = None  # the record id when the file is an object keyed by id


def read_rows(path: Path, split: str | None, default_split: str | None = None) -> Iterator[Row]:
    """Rows of a local data file or of a saved Hugging Face dataset folder, whose split is
    ``split`` or else the task's ``default_split``."""
    if not path.exists():
        raise DataError(f"{path}: no such file or folder")
    if path.is_dir():
        return _hf_rows(_load_from_disk(path, split or default_split))
    reader = {".json": _json_rows, ".jsonl": _jsonl_rows, ".csv": _csv_rows,
              ".parquet": _parquet_rows}.get(path.suffix.lower())
    if reader is None:
        known = ", ".join(f"{ext} ({what})" for ext, what in FORMATS.items())
        raise DataError(f"{path}: unknown data format '{path.suffix}'; expected one of {known}")
    if split is not None:
        raise DataError(f"{path}: a {path.suffix} file holds one split; remove split '{split}' "
                        "or give a Hugging Face dataset folder")
    return reader(path)


def hub_rows(hub_id: str, config: str | None, split: str) -> Iterator[Row]:
    """Rows of a Hugging Face hub dataset; with HF_HUB_OFFLINE set, only from the local cache."""
    import datasets

    try:
        dataset = datasets.load_dataset(hub_id, config, split=split)
    except Exception as exc:  # datasets raises many types for a missing cache entry or split
        raise DataError(f"{hub_id} ({config or 'default'} / {split}): cannot load the Hugging Face "
                        f"dataset: {exc}. Give a local copy with data=PATH") from None
    return _hf_rows(dataset)


def _read_text(path: Path) -> str:
    return path.read_bytes().decode("utf-8", errors="surrogateescape")


def _json_rows(path: Path) -> Iterator[Row]:
    try:
        data = json.loads(_read_text(path))
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: not valid JSON: {exc}") from None
    if isinstance(data, dict):
        return (Row(f"record '{key}'", values, key) for key, values in data.items())
    if isinstance(data, list):
        return (Row(f"item {i}", values) for i, values in enumerate(data))
    raise DataError(f"{path}: expected a JSON object (id -> record) or a list of records, "
                    f"got {type(data).__name__}")


def _jsonl_rows(path: Path) -> Iterator[Row]:
    # Split on newlines only: str.splitlines would also split at U+2028 inside a JSON string.
    for number, line in enumerate(_read_text(path).split("\n"), start=1):
        if not line.strip():
            continue
        try:
            values = json.loads(line)
        except json.JSONDecodeError as exc:
            values = Unparsed(f"not valid JSON: {exc.msg} at column {exc.colno}")
        yield Row(f"line {number}", values)


def _csv_rows(path: Path) -> Iterator[Row]:
    reader = csv.DictReader(io.StringIO(_read_text(path), newline=""))
    for values in reader:
        # The header is line 1; a quoted field may span lines, so report the row's last line.
        where = f"line {reader.line_num}"
        if None in values:  # DictReader files surplus values under the key None
            extra = len(values.pop(None))
            yield Row(where, Unparsed(f"{extra} more value(s) than the header has columns"))
        else:
            yield Row(where, values)


def _parquet_rows(path: Path) -> Iterator[Row]:
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except Exception as exc:  # pyarrow's errors for a damaged file vary by version
        raise DataError(f"{path}: not a readable Parquet file: {exc}") from None
    return (Row(f"row {i}", values) for i, values in enumerate(table.to_pylist()))


def _load_from_disk(path: Path, split: str | None):
    import datasets

    try:
        data = datasets.load_from_disk(str(path))
    except Exception as exc:  # FileNotFoundError or datasets' own errors for a foreign folder
        raise DataError(f"{path}: not a Hugging Face dataset folder (save_to_disk): {exc}") from None
    if isinstance(data, datasets.DatasetDict):
        if split is None or split not in data:
            raise DataError(f"{path}: choose a split with split=NAME; it has {sorted(data)}"
                            + (f", not '{split}'" if split else ""))
        return data[split]
    return data


def _hf_rows(dataset) -> Iterator[Row]:
    return (Row(f"row {i}", values) for i, values in enumerate(dataset))


@dataclass(frozen=True)
class Unparsed:
    """A line that did not parse, kept so validation reports it with the other problems."""

    reason: str
