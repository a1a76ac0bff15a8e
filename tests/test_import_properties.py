"""Every import layout in every format, fed bad input: the import is refused whole, with an error
that names the file, the line (or row) and the field, and the database is left as it was.
Good input imports, and importing it again adds nothing."""
from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import shutil
import string
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine, select

from annotate.errors import InvalidInput
from annotate.importing import import_files
from db import make_engine, session_factory, transaction, upgrade
from db.models import Base, Candidate, Document

MAX_CHARS = 200  # the max_document_chars setting these imports run with
COLUMN_CHARS = 128  # the database's size for ids, rater names and subreddits
LAYOUTS = ("documents", "pairs", "comparisons", "ratings")
FORMATS = ("jsonl", "csv", "parquet")
SENTINEL = ";;~;;"  # where bytes that are not UTF-8 go once the file is written (generated text has no ';')
PAYLOADS = ["<script>alert('x')</script>", '<img src=x onerror="alert(1)">',
            "</textarea><script>document.cookie</script>", "javascript:alert(1)", "&lt;b&gt; &amp; <!-- x -->",
            "{{7*7}} ${7*7}"]

# --- databases --------------------------------------------------------------------------------

SEED = {  # one small file of each layout, so every table the imports write already has rows
    "documents": [{"id": "seed:d1", "title": "Seed", "text": "A seeded document."}],
    "pairs": [{"prompt": "SUBREDDIT: r/seed\nTITLE: Seed\nPOST: A seeded post.", "chosen": "TL;DR: seeded chosen",
               "rejected": "TL;DR: seeded rejected"}],
    "comparisons": [{"post_id": "seed:c1", "post": "A seeded compared post.", "summary_0": "seed zero",
                     "summary_1": "seed one", "choice": 1, "worker": "seed:w1", "axis_0": {"overall": 5}}],
    "ratings": [{"post_id": "seed:r1", "summary": "seeded rated summary", "worker": "seed:w2", "overall": 4}],
}


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A migrated, seeded database that each example works on a copy of."""
    folder = tmp_path_factory.mktemp("template")
    engine = make_engine(f"sqlite:///{folder / 'calibra.db'}")
    upgrade(engine)
    seeds = [folder / f"seed-{layout}.jsonl" for layout in SEED]
    for path, rows in zip(seeds, SEED.values(), strict=True):
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    import_into(engine, seeds)
    engine.dispose()
    return folder / "calibra.db"


@contextmanager
def database(template: Path) -> Iterator[tuple[Path, Engine]]:
    """A copy of the template in a new folder, which also holds the example's files."""
    with tempfile.TemporaryDirectory() as name:
        folder = Path(name)
        shutil.copy(template, folder / "calibra.db")
        engine = make_engine(f"sqlite:///{folder / 'calibra.db'}")
        try:
            yield folder, engine
        finally:
            engine.dispose()


def import_into(engine: Engine, paths: list[Path], source: str | None = None,
                max_chars: int = MAX_CHARS) -> dict[str, Any]:
    sessions = session_factory(engine)
    return import_files(lambda: transaction(sessions), paths, source=source, max_chars=max_chars)


def snapshot(engine: Engine) -> dict[str, tuple[int, str]]:
    """Each table's row count and a checksum of its rows."""
    tables = {}
    with engine.connect() as conn:
        for table in Base.metadata.sorted_tables:
            rows = conn.execute(select(table).order_by(*table.primary_key.columns)).all()
            tables[table.name] = (len(rows), hashlib.sha256(repr(rows).encode()).hexdigest())
    return tables


# --- files ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Malformed:
    """A record that is not one: JSONL gets `line` as it is, CSV the record with a cell too many."""

    record: dict[str, Any]
    line: str = ""


Row = dict[str, Any] | Malformed


def write(path: Path, rows: list[Row], *, bad_bytes: bytes = b"", blank_before: frozenset[int] = frozenset(),
          bom: bool = False) -> list[int]:
    """Write the rows in the format the file's suffix names; the line (or row) of each record."""
    if path.suffix == ".parquet":
        pq.write_table(_table(rows, bad_bytes), path)
        return list(range(1, len(rows) + 1))
    text, lines = _jsonl(rows, blank_before) if path.suffix == ".jsonl" else _csv(rows)
    # backslashreplace writes a lone surrogate (only ever inside a JSON string) as its JSON escape
    data = (("\ufeff" if bom else "") + text).encode("utf-8", "backslashreplace")
    path.write_bytes(data.replace(SENTINEL.encode(), bad_bytes))
    return lines


def _jsonl(rows: list[Row], blank_before: frozenset[int]) -> tuple[str, list[int]]:
    out, lines = [], []
    for i, row in enumerate(rows):
        if i in blank_before:
            out.append("  \n")
        out.append((row.line if isinstance(row, Malformed) else json.dumps(row, ensure_ascii=False)) + "\n")
        lines.append(len(out))
    return "".join(out), lines


def _csv(rows: list[Row]) -> tuple[str, list[int]]:
    records = [row.record if isinstance(row, Malformed) else row for row in rows]
    names = list(dict.fromkeys(k for r in records for k in r))
    out, lines, line = [_csv_line(names)], [], 1
    for row, record in zip(rows, records, strict=True):
        text = _csv_line([_cell(record.get(k)) for k in names] + (["a cell too many"] * isinstance(row, Malformed)))
        out.append(text)
        line += len(io.StringIO(text, newline="").readlines())  # as many lines as csv reads
        lines.append(line)
    return "".join(out), lines


def _csv_line(cells: list[str]) -> str:
    buffer = io.StringIO(newline="")
    csv.writer(buffer).writerow(cells)
    return buffer.getvalue()


def _cell(value: Any) -> str:
    if value is None:
        return ""
    return value if isinstance(value, str) else json.dumps(value) if isinstance(value, dict | list) else str(value)


def _table(rows: list[Row], bad_bytes: bytes) -> pa.Table:
    records = [row for row in rows if isinstance(row, dict)]
    names = list(dict.fromkeys(k for r in records for k in r))
    return pa.table({name: _column([r.get(name) for r in records], bad_bytes) for name in names})


def _column(values: list[Any], bad_bytes: bytes) -> pa.Array:
    if not any(isinstance(v, str) and SENTINEL in v for v in values):
        return pa.array(values)
    # A string column holding bytes that are not UTF-8: pyarrow builds it from binary unchecked.
    raw = pa.array([None if v is None else v.encode().replace(SENTINEL.encode(), bad_bytes) for v in values],
                   pa.binary())
    return pa.Array.from_buffers(pa.string(), len(raw), raw.buffers(), raw.null_count)


# --- valid records ----------------------------------------------------------------------------

ids = st.text(string.ascii_lowercase + string.digits, min_size=1, max_size=10)
words = st.text(string.ascii_letters, min_size=1, max_size=8)
titles = st.lists(words, min_size=1, max_size=4).map(" ".join)
# Any text but control characters, with line breaks and tabs; no ':' or ';', so never a
# "POST:" or "TL;DR:" of its own.
prose = st.sampled_from(PAYLOADS) | st.text(
    st.characters(codec="utf-8", exclude_categories=("Cc", "Cs"), exclude_characters=":;") | st.sampled_from("\n\t"),
    min_size=1, max_size=30).filter(lambda s: s.strip() != "")
two_summaries = st.tuples(prose, prose).filter(lambda ab: ab[0].strip() != ab[1].strip())
scores = st.integers(1, 7)


@st.composite
def documents(draw: st.DrawFn) -> list[Row]:
    keys = draw(st.lists(ids, min_size=1, max_size=4, unique=True))
    return [{"id": key, "title": draw(st.none() | titles), "text": draw(prose), "reference": draw(st.none() | prose),
             "subreddit": draw(st.none() | words)} for key in keys]


@st.composite
def pairs(draw: st.DrawFn) -> list[Row]:
    rows: list[Row] = []
    for _ in range(draw(st.integers(1, 4))):
        subreddit, title = draw(st.none() | words), draw(st.none() | titles)
        head = (f"SUBREDDIT: r/{subreddit}\n" if subreddit else "") + (f"TITLE: {title}\n" if title else "")
        chosen, rejected = draw(two_summaries)
        rows.append({"prompt": f"{head}POST: {draw(prose)}", "chosen": f"TL;DR: {chosen}",
                     "rejected": f"TL;DR: {rejected}"})
    return rows


@st.composite
def comparisons(draw: st.DrawFn) -> list[Row]:
    posts = draw(st.lists(st.tuples(ids, prose), min_size=1, max_size=3, unique_by=lambda p: p[0]))
    rows: list[Row] = []
    for i in range(draw(st.integers(1, 4))):
        post_id, post = draw(st.sampled_from(posts))
        summary_0, summary_1 = draw(two_summaries)
        axis = st.none() | st.fixed_dictionaries({"overall": scores})
        rows.append({"post_id": post_id, "post": post, "summary_0": summary_0, "summary_1": summary_1,
                     "choice": draw(st.integers(0, 1)), "worker": draw(words), "summary_id_0": 2 * i,
                     "summary_id_1": 2 * i + 1, "axis_0": draw(axis), "axis_1": draw(axis)})
    return rows


@st.composite
def ratings(draw: st.DrawFn) -> list[Row]:
    posts, workers = draw(st.lists(ids, min_size=1, max_size=2)), draw(st.lists(words, min_size=1, max_size=2))
    # overall is on every record: the first record's fields tell the layout
    return [{"post_id": draw(st.sampled_from(posts)), "summary_id": i, "summary": " " + draw(prose),
             "worker": draw(st.sampled_from(workers)), "overall": draw(scores), "accuracy": draw(st.none() | scores),
             "coverage": draw(st.none() | scores), "coherence": draw(st.none() | scores)}
            for i in range(draw(st.integers(1, 5)))]


VALID = {"documents": documents(), "pairs": pairs(), "comparisons": comparisons(), "ratings": ratings()}


def stored_texts(layout: str, rows: list[Row]) -> tuple[set[str], set[str]]:
    """The document texts and the candidate texts that importing these records stores."""
    records = [r for r in rows if isinstance(r, dict)]
    if layout == "documents":
        return {r["text"].strip() for r in records}, set()
    if layout == "pairs":
        return ({r["prompt"].split("POST:", 1)[1].strip() for r in records},
                {r[k].removeprefix("TL;DR:").strip() for r in records for k in ("chosen", "rejected")})
    if layout == "comparisons":
        return {r["post"].strip() for r in records}, {r[k].strip() for r in records for k in ("summary_0", "summary_1")}
    return set(), {r["summary"].strip() for r in records}


# --- bad records ------------------------------------------------------------------------------

@dataclass(frozen=True)
class Field:
    """What a layout's field holds: text (as long as max_document_chars allows), name (text as long
    as its column allows), id (text or a whole number, as long as its column allows), score (1-7)
    or choice (0 or 1)."""

    kind: str
    required: bool = False


FIELDS = {
    "documents": {"text": Field("text", True), "title": Field("text"), "reference": Field("text"),
                  "subreddit": Field("name"), "id": Field("id")},
    "pairs": {"prompt": Field("text", True), "chosen": Field("text", True), "rejected": Field("text", True)},
    "comparisons": {"post": Field("text", True), "summary_0": Field("text", True), "summary_1": Field("text", True),
                    "post_id": Field("id"), "worker": Field("id", True), "choice": Field("choice", True)},
    "ratings": {"post_id": Field("id", True), "summary": Field("text", True), "worker": Field("id", True),
                "overall": Field("score"), "accuracy": Field("score")},
}
LIMITS = {"text": MAX_CHARS, "name": COLUMN_CHARS, "id": COLUMN_CHARS}
ID_FIELDS = {"documents": "id", "comparisons": "post_id"}
SUMMARY_PAIRS = {"pairs": ("chosen", "rejected"), "comparisons": ("summary_0", "summary_1")}
WRONG_TYPES: dict[str, list[Any]] = {
    "text": [42, 2.5, True, ["a"], {"a": "b"}, math.nan], "name": [42, True, ["a"]], "id": [2.5, True, ["a"], {"a": 1}],
    "score": ["five", True, [3], {"v": 3}], "choice": ["left", True, [0], {"v": 0}]}
OUT_OF_RANGE: dict[str, list[Any]] = {"score": [0, 8, -1, 3.5, 10**6], "choice": [2, -1, 0.5, 10]}
CONTROL = ["\x00", "\x01", "\x08", "\x0b", "\x1b", "\x7f", "\x85", "\x9b"]
NOT_UTF8 = [b"\xff", b"\xfe\xfe", b"\xc3\x28", b"\xed\xa0\x80", b"\xc0\xaf", b"\x80", b"\xf4\x90\x80\x80"]
MALFORMED_JSON = ['{"text": "unterminated', "[1, 2]", '"a string"', "42", '{"a": 1} {"b": 2}', "{'single': 1}",
                  "[" * 50_000, '{"n": ' + "9" * 5_000 + "}", '{"text": "a raw \x00 in a string"}']


@dataclass(frozen=True)
class Bad:
    """A file's records with one of them bad, and what the error must say."""

    rows: list[Row]
    index: int  # the bad record
    field: str | None
    words: tuple[str, ...]  # the message says one of these
    bad_bytes: bytes = b""


def _put(rows: list[Row], index: int | None, name: str, value: Any) -> list[Row]:
    """The rows with one field set in one record, or in all of them (index None)."""
    return [{**row, name: value} if index in (None, i) and isinstance(row, dict) else row
            for i, row in enumerate(rows)]


def _fields(layout: str, kinds: set[str], required: bool = False) -> list[str]:
    return [n for n, f in FIELDS[layout].items() if f.kind in kinds and (f.required or not required)]


@st.composite
def bad_files(draw: st.DrawFn, layout: str, fmt: str) -> Bad:
    rows = draw(VALID[layout])
    index = draw(st.integers(0, len(rows) - 1))
    mutations: list[Callable[[st.DrawFn, str, str, list[Row], int], Bad]] = [
        _missing, _empty, _huge, _control_character, _not_utf8]
    mutations += [_out_of_range] if _fields(layout, set(OUT_OF_RANGE)) else []
    mutations += [_wrong_type] if fmt != "csv" else []  # CSV cells are text, whatever they say
    mutations += [_malformed] if fmt != "parquet" else []
    mutations += [_duplicate_id] if layout in ID_FIELDS else []
    mutations += [_same_summaries] if layout in SUMMARY_PAIRS else []
    return draw(st.sampled_from(mutations))(draw, layout, fmt, rows, index)


def _missing(draw: st.DrawFn, layout: str, fmt: str, rows: list[Row], index: int) -> Bad:
    name = draw(st.sampled_from([n for n, f in FIELDS[layout].items() if f.required]))
    return Bad(_put(rows, index, name, None), index, name, ("missing",))


def _empty(draw: st.DrawFn, layout: str, fmt: str, rows: list[Row], index: int) -> Bad:
    name = draw(st.sampled_from(_fields(layout, {"text", "id"}, required=True)))
    empties = ["", "   ", "\n\t "] + ["TL;DR:", " TL;DR:  "] * ("summ" in name or name in ("chosen", "rejected"))
    empties += ["SUBREDDIT: r/a\nTITLE: t\nPOST:  "] * (name == "prompt")
    return Bad(_put(rows, index, name, draw(st.sampled_from(empties))), index, name, ("missing", "empty"))


def _wrong_type(draw: st.DrawFn, layout: str, fmt: str, rows: list[Row], index: int) -> Bad:
    name = draw(st.sampled_from(list(FIELDS[layout])))
    kind = FIELDS[layout][name].kind
    words = ("must be",) if kind in OUT_OF_RANGE else ("expected text",)
    return _everywhere_in_parquet(fmt, rows, index, name, draw(st.sampled_from(WRONG_TYPES[kind])), words)


def _out_of_range(draw: st.DrawFn, layout: str, fmt: str, rows: list[Row], index: int) -> Bad:
    name = draw(st.sampled_from(_fields(layout, set(OUT_OF_RANGE))))
    value = draw(st.sampled_from(OUT_OF_RANGE[FIELDS[layout][name].kind] + ["five", "nan", "1e400"]))
    return _everywhere_in_parquet(fmt, rows, index, name, str(value) if fmt == "csv" else value, ("must be",))


def _everywhere_in_parquet(fmt: str, rows: list[Row], index: int, name: str, value: Any,
                           words: tuple[str, ...]) -> Bad:
    """A Parquet column has one type: a value of another type goes in every row, and row 1 is
    the first bad one."""
    where = None if fmt == "parquet" else index
    return Bad(_put(rows, where, name, value), where or 0, name, words)


def _huge(draw: st.DrawFn, layout: str, fmt: str, rows: list[Row], index: int) -> Bad:
    name = draw(st.sampled_from(_fields(layout, set(LIMITS))))
    limit = LIMITS[FIELDS[layout][name].kind]
    value = ("POST: " if name == "prompt" else "") + "x" * (limit + draw(st.integers(1, 50)))
    return Bad(_put(rows, index, name, value), index, name, (f"the limit is {limit}",))


def _control_character(draw: st.DrawFn, layout: str, fmt: str, rows: list[Row], index: int) -> Bad:
    name = draw(st.sampled_from(_fields(layout, {"text", "name", "id"})))
    value = str((rows[index] if isinstance(rows[index], dict) else {}).get(name) or "abc")
    # only a JSON escape can write half of a surrogate pair
    char = draw(st.sampled_from(CONTROL + ["\ud800", "\udfff"] * (fmt == "jsonl")))
    at = draw(st.integers(0, len(value)))
    return Bad(_put(rows, index, name, value[:at] + char + value[at:]), index, name,
               ("control character", "surrogate"))


def _not_utf8(draw: st.DrawFn, layout: str, fmt: str, rows: list[Row], index: int) -> Bad:
    name = draw(st.sampled_from(_fields(layout, {"text", "name", "id"}) + ["note"]))  # note: a field no layout reads
    value = str((rows[index] if isinstance(rows[index], dict) else {}).get(name) or "")
    return Bad(_put(rows, index, name, value + SENTINEL), index, name, ("not UTF-8",),
               bad_bytes=draw(st.sampled_from(NOT_UTF8)))


def _malformed(draw: st.DrawFn, layout: str, fmt: str, rows: list[Row], index: int) -> Bad:
    record = rows[index]
    assert isinstance(record, dict)
    bad = [*rows[:index], Malformed(record, draw(st.sampled_from(MALFORMED_JSON))), *rows[index + 1:]]
    words = ("malformed JSON", "expected a JSON object") if fmt == "jsonl" else ("more cells",)
    return Bad(bad, index, None, words)


def _duplicate_id(draw: st.DrawFn, layout: str, fmt: str, rows: list[Row], index: int) -> Bad:
    """A later record with an earlier one's id and another text."""
    rows = rows if len(rows) > 1 else rows * 2
    index = draw(st.integers(1, len(rows) - 1))
    earlier = rows[draw(st.integers(0, index - 1))]
    assert isinstance(earlier, dict)
    name, text = ID_FIELDS[layout], "text" if layout == "documents" else "post"
    rows = _put(rows, index, name, earlier[name])
    rows = _put(rows, index, text, earlier[text] + " but another text")
    return Bad(rows, index, name, ("also the id of line",))


def _same_summaries(draw: st.DrawFn, layout: str, fmt: str, rows: list[Row], index: int) -> Bad:
    first, second = SUMMARY_PAIRS[layout]
    record = rows[index]
    assert isinstance(record, dict)
    same = draw(st.sampled_from(["{}", "  {} ", "TL;DR: {}"])).format(record[first].removeprefix("TL;DR:").strip())
    return Bad(_put(rows, index, second, same), index, second, ("same text",))


# --- the properties ---------------------------------------------------------------------------

@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("layout", LAYOUTS)
@settings(max_examples=25, deadline=None)
@given(data=st.data())
def test_a_bad_record_is_refused_by_name_and_stores_nothing(template: Path, layout: str, fmt: str,
                                                             data: st.DataObject) -> None:
    """Also across files, as a dataset's split comes: the valid files before the bad one are not
    stored either."""
    bad = data.draw(bad_files(layout, fmt))
    before = data.draw(st.lists(VALID[layout], max_size=2))
    source = data.draw(st.sampled_from([None, "org/dataset"]))  # a file's name, or --hf's dataset id
    with database(template) as (folder, engine):
        for i, rows in enumerate(before):
            write(folder / f"part{i}.{fmt}", rows)
        path = folder / f"part{len(before)}.{fmt}"
        lines = write(path, bad.rows, bad_bytes=bad.bad_bytes,
                      blank_before=data.draw(st.frozensets(st.integers(0, len(bad.rows) - 1))))
        unchanged = snapshot(engine)
        with pytest.raises(InvalidInput) as refused:
            import_into(engine, [folder / f"part{i}.{fmt}" for i in range(len(before))] + [path], source)
        error = refused.value
        assert (error.file, error.line, error.field) == (str(path), lines[bad.index], bad.field), str(error)
        assert str(error).startswith(f"{path}:{lines[bad.index]}: ")
        assert any(word in str(error) for word in bad.words), str(error)
        str(error).encode("utf-8")  # printable as it is, whatever bytes the file held
        assert snapshot(engine) == unchanged


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("layout", LAYOUTS)
@settings(max_examples=10, deadline=None)
@given(data=st.data())
def test_valid_records_import_verbatim_and_once(template: Path, layout: str, fmt: str, data: st.DataObject) -> None:
    rows = data.draw(VALID[layout])
    with database(template) as (folder, engine):
        path = folder / f"good.{fmt}"
        write(path, rows, blank_before=data.draw(st.frozensets(st.integers(0, len(rows) - 1))),
              bom=data.draw(st.booleans()) and fmt != "parquet")
        report = import_into(engine, [path])
        assert report["layout"] == layout and report["records"] == len(rows)
        documents, candidates = stored_texts(layout, rows)
        with session_factory(engine)() as db:
            # verbatim: markup included, which the pages escape when they show it
            assert documents <= set(db.scalars(select(Document.text)))
            assert candidates <= set(db.scalars(select(Candidate.text)))
        imported = snapshot(engine)
        again = import_into(engine, [path])
        assert {k: v for k, v in again.items() if k.endswith("_added")} == dict.fromkeys(
            ["documents_added", "candidates_added", "tasks_added", "judgements_added", "raters_added",
             "model_versions_added"], 0)
        assert snapshot(engine) == imported


# --- whole files, and fields too long for csv's own limit -------------------------------------

def _empty_parquet(path: Path) -> None:
    pq.write_table(pa.table({"text": pa.array([], pa.string())}), path)


def _truncated_parquet(path: Path) -> None:
    write(path, [{"text": "a whole document"}])
    path.write_bytes(path.read_bytes()[:-20])


WHOLE_FILES: dict[str, tuple[Callable[[Path], Any], str]] = {
    "empty.jsonl": (lambda p: p.write_text(""), "no records"),
    "blank.jsonl": (lambda p: p.write_text("\n  \n\t\n"), "no records"),
    "header-only.csv": (lambda p: p.write_text("text,title\n"), "no records"),
    "empty.csv": (lambda p: p.write_text(""), "no records"),
    "no-rows.parquet": (_empty_parquet, "no records"),
    "truncated.parquet": (_truncated_parquet, "not a readable Parquet file"),
    "text.parquet": (lambda p: p.write_text('{"text": "not parquet"}\n'), "not a readable Parquet file"),
    "notes.txt": (lambda p: p.write_text("text\n"), "unsupported file type"),
}


@pytest.mark.parametrize("name", sorted(WHOLE_FILES))
def test_a_bad_file_is_refused_by_name_and_stores_nothing(template: Path, name: str) -> None:
    make, words = WHOLE_FILES[name]
    with database(template) as (folder, engine):
        make(folder / name)
        unchanged = snapshot(engine)
        with pytest.raises(InvalidInput, match=words) as refused:
            import_into(engine, [folder / name])
        assert refused.value.file == str(folder / name)
        assert snapshot(engine) == unchanged


def test_a_csv_field_longer_than_csv_allows_names_its_line_and_the_setting(template: Path) -> None:
    with database(template) as (folder, engine):
        path = folder / "long.csv"
        path.write_text("id,text\na,short\nb," + "x" * 200_000 + "\n")
        with pytest.raises(InvalidInput) as refused:
            import_into(engine, [path], max_chars=40_000)
        assert str(refused.value).startswith(f"{path}:3: field 'text': has 200,000 characters; the limit is 40,000")


def test_a_prompt_of_long_blank_runs_parses_at_once(template: Path) -> None:
    """A title of blanks, with or without a POST: after it (this one backtracked for a minute)."""
    pad = " \n" * 1_000
    rows: list[Row] = [{"prompt": f"TITLE:{pad}x", "chosen": "a", "rejected": "b"},
                       {"prompt": f"TITLE: t{pad}POST: the post", "chosen": "a", "rejected": "b"}]
    with database(template) as (folder, engine):
        write(folder / "pairs.jsonl", rows)
        started = time.perf_counter()
        assert import_into(engine, [folder / "pairs.jsonl"], max_chars=40_000)["documents_added"] == 2
        assert time.perf_counter() - started < 10
        with session_factory(engine)() as db:
            assert db.scalar(select(Document.title).where(Document.text == "the post")) == "t"
