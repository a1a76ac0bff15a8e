"""Read JSONL, CSV and Parquet files as numbered records, with errors that name the line."""
from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from annotate.errors import InvalidInput

FORMATS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl", ".csv": "csv", ".parquet": "parquet"}

# Text files are decoded with errors="surrogateescape", which keeps each byte that is not UTF-8
# as one of these characters: the record can still be parsed, so the error can name its field.
UNDECODABLE = re.compile("[\udc80-\udcff]")


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
            text = raw.decode("utf-8", "surrogateescape")
            if number == 1:
                text = text.removeprefix("\ufeff")  # the byte-order mark some Windows editors write
            if not text.strip():
                continue
            undecodable = UNDECODABLE.search(text)
            if undecodable:
                raise InvalidInput(f"{_not_utf8(undecodable)} (is this really a JSONL file?)", file=str(path),
                                   line=number, field=_field_holding_bytes(text))
            yield Record(number, _json_object(text, path, number))


def _json_object(text: str, path: Path, number: int) -> dict[str, Any]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidInput(f"malformed JSON: {exc.msg} at column {exc.colno}", file=str(path), line=number) from None
    except ValueError as exc:  # an integer of more digits than Python converts
        raise InvalidInput(f"malformed JSON: {str(exc).split(':')[0]}", file=str(path), line=number) from None
    except RecursionError:
        raise InvalidInput("malformed JSON: nested too deeply", file=str(path), line=number) from None
    if not isinstance(data, dict):
        raise InvalidInput(f"expected a JSON object, got {type(data).__name__}", file=str(path), line=number)
    return data


def _field_holding_bytes(line: str) -> str | None:
    """The field of a JSONL line whose value holds the bytes that are not UTF-8, when the line
    parses and the bytes are in a value rather than in a field's name."""
    try:
        data = json.loads(line)
    except (ValueError, RecursionError):
        return None
    if not isinstance(data, dict):
        return None
    return next((k for k, v in data.items() if not UNDECODABLE.search(k) and _holds_bytes(v)), None)


def _holds_bytes(value: Any) -> bool:
    if isinstance(value, str):
        return UNDECODABLE.search(value) is not None
    if isinstance(value, dict):
        return any(_holds_bytes(k) or _holds_bytes(v) for k, v in value.items())
    return isinstance(value, list) and any(_holds_bytes(v) for v in value)


def _not_utf8(undecodable: re.Match[str]) -> str:
    byte = ord(undecodable.group()) - 0xDC00
    return f"byte 0x{byte:02X} at character {undecodable.start() + 1} is not UTF-8 text"


def _read_csv(path: Path) -> Iterator[Record]:
    text = path.read_bytes().decode("utf-8-sig", "surrogateescape")  # -sig: Excel starts its CSV with a BOM
    # No field is longer than the file; without this, csv's own limit (128 KiB) would refuse a
    # long field with an error that names neither the field nor the setting that limits it.
    csv.field_size_limit(max(csv.field_size_limit(), len(text)))
    reader = csv.DictReader(io.StringIO(text, newline=""))
    try:
        undecodable = UNDECODABLE.search(",".join(reader.fieldnames or ()))
        if undecodable:
            raise InvalidInput(f"in the header, {_not_utf8(undecodable)} (is this really a CSV file?)",
                               file=str(path), line=1)
        for row in reader:
            if None in row:  # more cells than header columns
                raise InvalidInput("row has more cells than the header", file=str(path), line=reader.line_num)
            for name, value in row.items():
                undecodable = UNDECODABLE.search(value or "")
                if undecodable:
                    raise InvalidInput(f"{_not_utf8(undecodable)} (is this really a CSV file?)", file=str(path),
                                       line=reader.line_num, field=name)
            yield Record(reader.line_num, {k: v for k, v in row.items() if v not in (None, "")})
    except csv.Error as exc:
        raise InvalidInput(f"malformed CSV: {exc}", file=str(path), line=reader.line_num) from None


def _read_parquet(path: Path) -> Iterator[Record]:
    import pyarrow.parquet as pq  # imported here: only Parquet users pay for it

    try:
        table = pq.read_table(path)
    except Exception as exc:  # pyarrow raises several types for a file that is not Parquet
        raise InvalidInput(f"not a readable Parquet file: {exc}", file=str(path)) from None
    columns = {name: _column_values(path, name, table.column(name)) for name in table.column_names}
    for number, values in enumerate(zip(*columns.values(), strict=True), start=1):
        yield Record(number, {k: v for k, v in zip(columns, values, strict=True) if v is not None})


def _column_values(path: Path, name: str, column: Any) -> list[Any]:
    try:
        return column.to_pylist()
    except UnicodeDecodeError as exc:
        # pyarrow checks a string column's UTF-8 only as it converts it, and says not where:
        # converting one value at a time finds the row.
        row = next((n for n, value in enumerate(column, start=1) if not _decodes(value)), None)
        raise InvalidInput(f"byte 0x{exc.object[exc.start]:02X} is not UTF-8 text", file=str(path),
                           line=row, field=name) from None


def _decodes(scalar: Any) -> bool:
    try:
        scalar.as_py()
    except UnicodeDecodeError:
        return False
    return True
