"""CSV cells that a spreadsheet opens as text, not as a formula.

Rater names and comments are typed by people, and a cell such as `=HYPERLINK("http://…")` in a
downloaded CSV file runs as a formula when the file is opened in Excel or LibreOffice. The
OWASP rule: a text cell that starts with `=`, `+`, `-`, `@`, a tab or a carriage return gets a
single quote in front, which the spreadsheet shows as text. Only text is escaped: numbers,
negative ones included, stay numbers.
"""
from __future__ import annotations

from typing import Final

import pandas as pd

FORMULA_START: Final = ("=", "+", "-", "@", "\t", "\r")


def escape_cell(value: object) -> object:
    """`value` with a single quote in front if it is text that a spreadsheet would read as a formula."""
    if isinstance(value, str) and value.startswith(FORMULA_START):
        return "'" + value
    return value


def escape_table(table: pd.DataFrame) -> pd.DataFrame:
    """A copy of `table` whose text cells are escaped; numeric columns are left as they are."""
    escaped = table.copy()
    for column in table.select_dtypes(include=["object", "string"]).columns:
        escaped[column] = table[column].map(escape_cell)
    return escaped


def csv_text(table: pd.DataFrame) -> str:
    """`table` as CSV with its text cells escaped.

    Lines end in CRLF (RFC 4180), which also makes the writer quote a cell holding a lone
    carriage return: with pandas' default "\n" such a cell is written bare, and every CSV
    reader starts a new row at it.
    """
    return str(escape_table(table).to_csv(index=False, lineterminator="\r\n"))
