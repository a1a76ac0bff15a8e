"""Read JSONL, CSV and Parquet files as numbered records, with errors that name the line."""
from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from annotate.errors import InvalidInput

FORMATS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl", ".csv": "csv", ".parquet": "parquet"}


@dataclass(frozen=True)
class Record:
    line: int  # 1-based line in JSONL/CSV files, 1-based row in Parquet files
    data: dict[str, Any]


def detect_format(path: Path, declared: str | None = None) -> str:
    if declared and declared != "auto":
        if declared not in set(FORMATS.values()):
            raise InvalidInput(f"unknown format {declared!r}; use jsonl, csv or parquet", file=str(path))
        return declared
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise InvalidInput(f"unsupported file type {path.suffix or '(none)'!r}; "
                           "expected .jsonl, .csv or .parquet", file=str(path))
    return fmt


def read_records(path: Path, fmt: str | None = None) -> Iterator[Record]:
    if not path.is_file():
        raise InvalidInput("no such file", file=str(path))
    kind = detect_format(path, fmt)
    reader = {"jsonl": _read_jsonl, "csv": _read_csv, "parquet": _read_parquet}[kind]
    yield from reader(path)


def _read_jsonl(path: Path) -> Iterator[Record]:
    with path.open("rb") as fh:
        for number, raw in enumerate(fh, start=1):
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError:
                raise InvalidInput("not UTF-8 text (is this really a JSONL file?)",
                                   file=str(path), line=number) from None
            if not text.strip():
                continue
            try:
                data = json.loads(text)
            except json.JSONDecodeError as exc:
                raise InvalidInput(f"malformed JSON: {exc.msg} at column {exc.colno}",
                                   file=str(path), line=number) from None
            if not isinstance(data, dict):
                raise InvalidInput(f"expected a JSON object, got {type(data).__name__}",
                                   file=str(path), line=number)
            yield Record(number, data)


def _read_csv(path: Path) -> Iterator[Record]:
    try:
        with path.open(newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            for row in reader:
                if None in row:  # more cells than header columns
                    raise InvalidInput("row has more cells than the header", file=str(path),
                                       line=reader.line_num)
                yield Record(reader.line_num, {k: v for k, v in row.items() if v not in (None, "")})
    except UnicodeDecodeError:
        raise InvalidInput("not UTF-8 text (is this really a CSV file?)", file=str(path)) from None
    except csv.Error as exc:
        raise InvalidInput(f"malformed CSV: {exc}", file=str(path)) from None


def _read_parquet(path: Path) -> Iterator[Record]:
    import pyarrow.parquet as pq  # imported here: only Parquet users pay for it

    try:
        table = pq.read_table(path)
    except Exception as exc:  # pyarrow raises several types for a file that is not Parquet
        raise InvalidInput(f"not a readable Parquet file: {exc}", file=str(path)) from None
    for number, row in enumerate(table.to_pylist(), start=1):
        yield Record(number, {k: v for k, v in row.items() if v is not None})
