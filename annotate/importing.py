"""Import documents and human judgements from files.

Four layouts, detected from the fields of the first record:
- documents: one document per record, fields chosen by a `FieldMap` (the TL;DR test posts
  `instruction_id/subreddit/title/instruction/gold_response` are a preset);
- pairs: `prompt/chosen/rejected`, a document, two candidates, a task and one judgement each;
- comparisons: `post_id/post/summary_0/summary_1/choice/worker`, the same with the rater's id
  and the per-summary rating means kept on the candidates;
- ratings: `post_id/summary/worker/overall`, each rater's 1-7 scores per summary (posts known
  only by id become text-less documents, never served);
- candidates: your own models' summaries, to be judged: `{"id", "text" | "prompt", "title",
  "reference", "candidates": [{"text", "model"}]}`, the flat `{"prompt", "responses": [...],
  "models": [...]}`, or one row per summary (`doc_id/text/candidate/model`, as in a CSV). Each
  model becomes a model version of kind `external` (no weights), named in reports and exports,
  never shown to annotators; `calibra tasks create` then puts the summaries in front of them.

Every record of every file is validated before anything is written, and one transaction holds
all the files, so a bad record leaves the database as it was. A value that cannot be stored as it
is (wrong type, control characters, longer than its limit or its column) is refused with the
file, line and field, never stored altered.
"""
from __future__ import annotations

import contextlib
import json
import math
import re
import reprlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, NamedTuple

from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload

from annotate.errors import InvalidInput
from annotate.readers import Record, read_records
from annotate.tldr_layout import bare_summary, prompt_parts
from db.engine import Transactions
from db.models import (
    Assignment,
    AssignmentStatus,
    Candidate,
    CandidateOrigin,
    CandidateRating,
    ComparisonTask,
    Document,
    Judgement,
    ModelKind,
    ModelVersion,
    Rater,
    TaskCandidate,
    digest,
    utcnow,
)
from db.statistics import refresh_statistics

LAYOUTS = ("auto", "documents", "pairs", "comparisons", "ratings", "candidates")
AXES = ("overall", "accuracy", "coverage", "coherence")  # 1-7 scales; overall is the quality
PAIRS_RATER = "import:unattributed"  # pairs files carry no rater ids


@dataclass(frozen=True)
class FieldMap:
    """Which input field holds which document attribute; only `text` is required."""

    text: str = "text"
    title: str | None = "title"
    id: str | None = "id"
    reference: str | None = "reference"
    subreddit: str | None = "subreddit"
    split: str | None = "split"


TLDR_POSTS = FieldMap(text="instruction", title="title", id="instruction_id",
                      reference="gold_response", subreddit="subreddit", split=None)


@dataclass
class ImportReport:
    layout: str
    records: int = 0
    documents_added: int = 0
    documents_existing: int = 0
    candidates_added: int = 0
    tasks_added: int = 0
    judgements_added: int = 0
    judgements_existing: int = 0
    raters_added: int = 0
    model_versions_added: int = 0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class DocFields:
    text: str
    title: str | None = None
    external_id: str | None = None
    reference: str | None = None
    subreddit: str | None = None
    split: str | None = None


@dataclass(frozen=True)
class _Judged:
    """One human choice between summaries of one document (pairs and comparisons)."""

    doc: DocFields
    summaries: tuple[str, ...]  # in the order the rater saw them
    best: int
    rater: str
    meta: tuple[dict[str, Any] | None, ...] = field(default=())
    shown_in_order: bool = True  # False: the file does not say which summary the rater saw first


@dataclass(frozen=True)
class _Rated:
    """One rater's scores for one summary of a post known only by its id."""

    post_id: str
    summary: str
    summary_id: Any
    rater: str
    scores: dict[str, int | None]


@dataclass(frozen=True)
class _Outputs:
    """Models' summaries of one document, to be judged."""

    doc: DocFields
    outputs: tuple[tuple[str, str], ...]  # (summary, model name)
    line: int  # named if a model's name is taken by one of Calibra's own versions


_Item = DocFields | _Judged | _Rated | _Outputs


@dataclass(frozen=True)
class _ParsedFile:
    """A file's records, validated and ready to write."""

    file: str
    source: str
    layout: str
    items: list[_Item]


SIGNATURES = {"pairs": {"prompt", "chosen", "rejected"}, "comparisons": {"post", "summary_0", "summary_1", "choice"},
              "ratings": {"post_id", "summary", "worker", "overall"}}


# Any of these marks a file of models' outputs to be judged (nested, flat, one row per summary).
CANDIDATE_SIGNATURES = ({"candidates"}, {"responses", "models"}, {"doc_id", "candidate", "model"})


def detect_layout(keys: Iterable[str], text_field: str = "text") -> str:
    keys = set(keys)
    if any(signature <= keys for signature in CANDIDATE_SIGNATURES):
        return "candidates"
    for layout, signature in SIGNATURES.items():
        if signature <= keys:
            return layout
    # A record with all but one of a layout's fields is read as that layout, so that the error
    # names the missing field instead of a document's text.
    if text_field not in keys:
        for layout, signature in SIGNATURES.items():
            if len(signature & keys) == len(signature) - 1:
                return layout
    return "documents"


def import_files(tx: Transactions, files: Sequence[Path], *, fmt: str = "auto", source: str | None = None,
                 layout: str = "auto", fields: FieldMap | None = None, split: str | None = None,
                 max_chars: int = 40_000) -> dict[str, Any]:
    """Import files all or nothing, and the counts added up: every record of every file is
    validated before the one transaction that writes them, so a bad record anywhere (say in the
    third file of a dataset's split) stores nothing, not even the files before it. The source
    label defaults to each file's name."""
    parsed = [_parse_file(read_records(path, fmt), file=str(path), source=source or path.stem, layout=layout,
                          fields=fields, split=split, max_chars=max_chars) for path in files]
    totals: dict[str, Any] = {}
    with tx() as db:
        for batch in parsed:
            report = _write(db, batch)
            for key, value in report.as_dict().items():
                totals[key] = value if isinstance(value, str) else totals.get(key, 0) + value
        refresh_statistics(db)
    return totals


def _parse_file(records: Iterable[Record], *, file: str, source: str, layout: str, fields: FieldMap | None,
                split: str | None, max_chars: int) -> _ParsedFile:
    rows = list(records)
    if not rows:
        raise InvalidInput("the file has no records", file=file)
    if layout not in LAYOUTS:
        raise InvalidInput(f"unknown layout {layout!r}; use one of {', '.join(LAYOUTS)}", file=file)
    _check_label("the source label", source, SOURCE_LIMIT, file)
    if split is not None:
        _check_label("the split name", split, SPLIT_LIMIT, file)
    fields = fields or _default_fields(rows[0])
    if layout == "auto":
        layout = detect_layout(rows[0].data.keys(), fields.text)
    parsed = [_PARSERS[layout](r, file, fields, max_chars) for r in rows]
    id_field = {"documents": fields.id, "candidates": "doc_id" if "doc_id" in rows[0].data else "id"}
    _refuse_conflicting_ids(rows, parsed, file, id_field.get(layout, "post_id"))
    if split is not None:
        parsed = [_with_split(p, split) for p in parsed]
    return _ParsedFile(file=file, source=source, layout=layout, items=parsed)


def _write(db: Session, parsed: _ParsedFile) -> ImportReport:
    writer = _Writer(db, parsed.source, ImportReport(layout=parsed.layout, records=len(parsed.items)))
    batch = f"import:{parsed.file.rsplit('/', 1)[-1]}"
    groups: dict[tuple[str, str], list[_Rated]] = {}
    for item in parsed.items:
        if isinstance(item, DocFields):
            writer.document(item)
        elif isinstance(item, _Rated):
            groups.setdefault((item.post_id, item.rater), []).append(item)
        elif isinstance(item, _Outputs):
            writer.outputs(item, parsed.file)
        else:
            writer.judged(item, batch)
    for (post_id, rater), items in groups.items():
        writer.rated(post_id, rater, items, batch)
    writer.finish()
    return writer.report


def parse_documents(records: list[Record], *, file: str, fields: FieldMap | None = None,
                    max_chars: int = 40_000) -> list[tuple[int, DocFields]]:
    """Validated documents of a documents-layout file, with their line numbers; writes nothing."""
    if not records:
        raise InvalidInput("the file has no records", file=file)
    fields = fields or _default_fields(records[0])
    return [(r.line, _parse_document(r, file, fields, max_chars)) for r in records]


def _default_fields(first: Record) -> FieldMap:
    return TLDR_POSTS if set(asdict(TLDR_POSTS).values()) - {None} <= first.data.keys() else FieldMap()


def _with_split(item: _Item, split: str) -> _Item:
    if isinstance(item, DocFields):
        return replace(item, split=split)
    if isinstance(item, _Outputs):
        return replace(item, doc=replace(item.doc, split=split))
    if isinstance(item, _Rated):
        return item  # text-less documents carry no split
    return replace(item, doc=replace(item.doc, split=split))


def _refuse_conflicting_ids(rows: list[Record], parsed: list[_Item], file: str, id_field: str | None) -> None:
    """One id, two texts: which is the document? (Storing both breaks the one id per source.)"""
    first: dict[str, tuple[int, str]] = {}
    for record, item in zip(rows, parsed, strict=True):
        doc = item if isinstance(item, DocFields) else item.doc if isinstance(item, _Judged | _Outputs) else None
        if doc is None or doc.external_id is None:
            continue
        line, text = first.setdefault(doc.external_id, (record.line, doc.text))
        if text != doc.text:
            raise InvalidInput(f"{doc.external_id!r} is also the id of line {line}, which has a different text",
                               file=file, line=record.line, field=id_field)


def _check_label(what: str, value: str, limit: _Limit, file: str) -> None:
    if len(value) > limit.chars:
        raise InvalidInput(f"{what} {reprlib.repr(value)} has {len(value):,} characters; "
                           f"the limit is {limit.chars} ({limit.why})", file=file)


# --- parsing: pure functions from a record to plain values ------------------------------------

class _Limit(NamedTuple):
    chars: int
    why: str  # named in the error, so the user knows what to shorten or which setting to change


def _column_limit(column: Any) -> _Limit:
    """A string column's size: PostgreSQL refuses longer values (SQLite would store them)."""
    return _Limit(int(column.type.length), "the size of its database column")


def _document_limit(max_chars: int) -> _Limit:
    return _Limit(max_chars, "setting max_document_chars")


ID_LIMIT, RATER_LIMIT = _column_limit(Document.external_id), _column_limit(Rater.name)
SUBREDDIT_LIMIT, SPLIT_LIMIT = _column_limit(Document.subreddit), _column_limit(Document.split)
SOURCE_LIMIT = _column_limit(Document.source)

# Control characters other than tab and line breaks (PostgreSQL refuses NUL; the others are
# invisible in the annotation page), and halves of surrogate pairs, which JSON escapes can
# produce but no text encoding stores.
NOT_TEXT = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff]")
KINDS = {bool: "true/false", int: "a number", float: "a number", list: "a list", dict: "an object",
         bytes: "binary data"}


def _text(record: Record, file: str, name: str, limit: _Limit, *, required: bool = False,
          numbers: bool = False) -> str | None:
    """A field's text, stripped; `numbers`: whole numbers are accepted too (ids, rater names)."""
    return _as_text(record.data.get(name), record, file, name, limit, required=required, numbers=numbers)


def _as_text(value: Any, record: Record, file: str, name: str, limit: _Limit, *, required: bool = False,
             numbers: bool = False) -> str | None:
    """`_text` of a value found anywhere in a record (`name` says where, e.g. candidates[2].text)."""
    if value is None:
        if required:
            raise _missing(record, file, name)
        return None
    if not isinstance(value, str) and not (numbers and type(value) is int):
        expected = "text or a whole number" if numbers else "text"
        raise InvalidInput(f"expected {expected}, got {KINDS.get(type(value), type(value).__name__)}",
                           file=file, line=record.line, field=name)
    text = str(value)
    _check_text(text, record, file, name)
    text = text.strip()
    if required and not text:
        raise InvalidInput("is empty", file=file, line=record.line, field=name)
    _check_length(text, limit, record, file, name)
    return text or None


def _check_text(text: str, record: Record, file: str, name: str) -> None:
    found = NOT_TEXT.search(text)
    if found:
        char = found.group()
        what = "half of a surrogate pair, not text" if "\ud800" <= char <= "\udfff" else "a control character"
        raise InvalidInput(f"contains U+{ord(char):04X} ({what}) at character {found.start() + 1}",
                           file=file, line=record.line, field=name)


def _check_length(text: str, limit: _Limit, record: Record, file: str, name: str, part: str = "") -> None:
    if len(text) > limit.chars:
        raise InvalidInput(f"{part}has {len(text):,} characters; the limit is {limit.chars:,} ({limit.why})",
                           file=file, line=record.line, field=name)


def _parse_document(record: Record, file: str, fields: FieldMap, max_chars: int) -> DocFields:
    long = _document_limit(max_chars)

    def optional(name: str | None, limit: _Limit = long, numbers: bool = False) -> str | None:
        return _text(record, file, name, limit, numbers=numbers) if name else None

    return DocFields(text=_text(record, file, fields.text, long, required=True) or "",
                     title=optional(fields.title), external_id=optional(fields.id, ID_LIMIT, True),
                     reference=optional(fields.reference),
                     subreddit=optional(fields.subreddit, SUBREDDIT_LIMIT),
                     split=optional(fields.split, SPLIT_LIMIT))


def _summary(record: Record, file: str, name: str, max_chars: int) -> str:
    text = bare_summary(_text(record, file, name, _document_limit(max_chars), required=True) or "")
    if not text:
        raise InvalidInput("is empty after its 'TL;DR:' prefix", file=file, line=record.line, field=name)
    return text


def _summaries(record: Record, file: str, names: tuple[str, str], max_chars: int) -> tuple[str, str]:
    first, second = (_summary(record, file, name, max_chars) for name in names)
    if first == second:
        raise InvalidInput(f"{names[0]} and {names[1]} are the same text", file=file, line=record.line,
                           field=names[1])
    return first, second


def _parse_pair(record: Record, file: str, fields: FieldMap, max_chars: int) -> _Judged:
    prompt = _text(record, file, "prompt", _document_limit(max_chars), required=True) or ""
    parts = prompt_parts(prompt)
    doc = DocFields(text=parts[0], title=parts[1], subreddit=parts[2]) if parts else DocFields(text=prompt)
    if not doc.text:
        raise InvalidInput("has an empty POST part", file=file, line=record.line, field="prompt")
    _check_length(doc.subreddit or "", SUBREDDIT_LIMIT, record, file, "prompt", "its SUBREDDIT ")
    chosen, rejected = _summaries(record, file, ("chosen", "rejected"), max_chars)
    return _Judged(doc=doc, summaries=(chosen, rejected), best=0, rater=PAIRS_RATER, shown_in_order=False)


def _parse_comparison(record: Record, file: str, fields: FieldMap, max_chars: int) -> _Judged:
    long = _document_limit(max_chars)
    doc = DocFields(text=_text(record, file, "post", long, required=True) or "",
                    external_id=_text(record, file, "post_id", ID_LIMIT, numbers=True),
                    title=_text(record, file, "title", long),
                    subreddit=_text(record, file, "subreddit", SUBREDDIT_LIMIT))
    summaries = _summaries(record, file, ("summary_0", "summary_1"), max_chars)
    choice = _whole_number(record, file, "choice", range(2), "0 or 1")
    if choice is None:
        raise _missing(record, file, "choice")
    rater = _text(record, file, "worker", RATER_LIMIT, required=True, numbers=True) or ""
    meta = tuple({"summary_id": _meta(record, file, f"summary_id_{i}", max_chars),
                  "axis": _meta(record, file, f"axis_{i}", max_chars)} for i in range(2))
    return _Judged(doc=doc, summaries=summaries, best=choice, rater=rater, meta=meta)


def _parse_rating(record: Record, file: str, fields: FieldMap, max_chars: int) -> _Rated:
    scores = {axis: _whole_number(record, file, axis, range(1, 8), "a whole number from 1 to 7") for axis in AXES}
    return _Rated(post_id=_text(record, file, "post_id", ID_LIMIT, required=True, numbers=True) or "",
                  summary=_summary(record, file, "summary", max_chars),
                  summary_id=_meta(record, file, "summary_id", max_chars),
                  rater=_text(record, file, "worker", RATER_LIMIT, required=True, numbers=True) or "",
                  scores=scores)


MODEL_LIMIT = _column_limit(ModelVersion.name)


def _parse_outputs(record: Record, file: str, fields: FieldMap, max_chars: int) -> _Outputs:
    data, long = record.data, _document_limit(max_chars)
    if "candidate" in data:  # one row per summary: the document's fields repeat on each row
        doc = _parse_document(record, file, replace(fields, id="doc_id"), max_chars)
        pairs: list[tuple[Any, Any, str, str]] = [(data.get("candidate"), data.get("model"), "candidate", "model")]
    else:
        text_field = "text" if "text" in data else "prompt"
        doc = _parse_document(record, file, replace(fields, text=text_field), max_chars)
        parts = prompt_parts(doc.text) if text_field == "prompt" else None
        if parts:  # a prompt in the TL;DR layout: its post, title and subreddit
            doc = replace(doc, text=parts[0], title=doc.title or parts[1], subreddit=doc.subreddit or parts[2])
        pairs = _nested_outputs(record, file) if "candidates" in data else _flat_outputs(record, file)
    outputs = []
    for text, model, text_at, model_at in pairs:
        summary = bare_summary(_as_text(text, record, file, text_at, long, required=True) or "")
        if not summary:
            raise InvalidInput("is empty after its 'TL;DR:' prefix", file=file, line=record.line, field=text_at)
        outputs.append((summary, _as_text(model, record, file, model_at, MODEL_LIMIT, required=True,
                                          numbers=True) or ""))
    return _Outputs(doc=doc, outputs=tuple(outputs), line=record.line)


def _list(record: Record, file: str, name: str) -> list[Any]:
    value = record.data.get(name)
    if value is None:
        raise _missing(record, file, name)
    if not isinstance(value, list) or not value:
        raise InvalidInput("must be a non-empty list", file=file, line=record.line, field=name)
    return value


def _nested_outputs(record: Record, file: str) -> list[tuple[Any, Any, str, str]]:
    out = []
    for i, item in enumerate(_list(record, file, "candidates")):
        if not isinstance(item, dict):
            raise InvalidInput('must be an object {"text", "model"}', file=file, line=record.line,
                               field=f"candidates[{i}]")
        out.append((item.get("text"), item.get("model"), f"candidates[{i}].text", f"candidates[{i}].model"))
    return out


def _flat_outputs(record: Record, file: str) -> list[tuple[Any, Any, str, str]]:
    responses, models = _list(record, file, "responses"), _list(record, file, "models")
    if len(responses) != len(models):
        raise InvalidInput(f"has {len(models)} names for {len(responses)} responses", file=file, line=record.line,
                           field="models")
    return [(r, m, f"responses[{i}]", f"models[{i}]") for i, (r, m) in enumerate(zip(responses, models, strict=True))]


_PARSERS: dict[str, Callable[[Record, str, FieldMap, int], _Item]] = {
    "documents": _parse_document, "pairs": _parse_pair, "comparisons": _parse_comparison, "ratings": _parse_rating,
    "candidates": _parse_outputs}


def _missing(record: Record, file: str, name: str) -> InvalidInput:
    return InvalidInput("missing required field", file=file, line=record.line, field=name)


def _whole_number(record: Record, file: str, name: str, allowed: range, expected: str) -> int | None:
    """A number from JSON or Parquet, or a CSV cell's text such as "5" or "5.0"."""
    value = record.data.get(name)
    if value is None:
        return None
    number: float | None = None
    if isinstance(value, str):
        with contextlib.suppress(ValueError):
            number = float(value)
    elif isinstance(value, int | float) and not isinstance(value, bool):
        number = value
    # float.is_integer is False for NaN and infinities; ints are compared as they are, as
    # converting a huge one to a float would overflow.
    whole = isinstance(number, int) or (isinstance(number, float) and number.is_integer())
    if number is None or not whole or int(number) not in allowed:
        raise InvalidInput(f"must be {expected}, got {reprlib.repr(value)}", file=file, line=record.line, field=name)
    return int(number)


def _meta(record: Record, file: str, name: str, max_chars: int) -> Any:
    """An optional value kept as it is in a JSON column (rating summaries, summary ids): plain
    JSON only, whatever the file's format gave."""
    value = record.data.get(name)
    problem = _not_plain_json(value)
    if problem:
        raise InvalidInput(problem, file=file, line=record.line, field=name)
    _check_length(json.dumps(value), _document_limit(max_chars), record, file, name, "as JSON ")
    return value


def _not_plain_json(value: Any) -> str | None:
    if value is None or isinstance(value, bool | int):
        return None
    if isinstance(value, float):
        return None if math.isfinite(value) else f"holds the number {value}, which JSON cannot store"
    if isinstance(value, str):
        found = NOT_TEXT.search(value)
        return None if found is None else f"holds U+{ord(found.group()):04X}, which is not text"
    if isinstance(value, list):
        return next((p for p in map(_not_plain_json, value) if p), None)
    if isinstance(value, dict):
        return next((p for k, v in value.items() for p in (_not_plain_json(k), _not_plain_json(v)) if p), None)
    return f"holds {KINDS.get(type(value), type(value).__name__)}, which JSON cannot store"


# --- writing: get-or-create keyed by content hashes, one flush per file ----------------------
# Rows are linked through relationships rather than ids, so nothing needs flushing until the
# end: a 7k-pair file is a handful of multi-row INSERTs instead of tens of thousands of flushes.

class _Writer:
    def __init__(self, db: Session, source: str, report: ImportReport) -> None:
        self.db, self.source, self.report = db, source, report
        self.docs: dict[str, Document] = {}
        self.candidates: dict[tuple[str, str], Candidate] = {}
        self.tasks: dict[tuple[str, frozenset[str]], ComparisonTask] = {}
        self.judged_by: set[tuple[int, int]] = set()  # (task id, rater id) already in the database
        self.raters: dict[str, Rater] = {}
        self.pending_orders: list[tuple[Assignment, list[Candidate]]] = []
        self.by_external_id: dict[str, tuple[str, Document]] = {}
        self.models: dict[str, ModelVersion] = {}

    def document(self, d: DocFields) -> tuple[str, Document]:
        key = digest(d.text)
        if key not in self.docs:
            with self.db.no_autoflush:
                doc = self.db.scalar(select(Document).where(Document.content_hash == key))
                if doc is None and d.external_id is not None:
                    doc = self.db.scalars(select(Document).where(Document.external_id == d.external_id)
                                          .order_by(Document.source != self.source)).first()
            if doc is not None and not doc.has_text:
                # Known so far only by its id (from a ratings file): now it gets its text.
                doc.text, doc.has_text, doc.content_hash = d.text, True, key
                doc.title, doc.subreddit = doc.title or d.title, doc.subreddit or d.subreddit
            if doc is None:
                doc = Document(source=self.source, external_id=d.external_id, title=d.title,
                               subreddit=d.subreddit, text=d.text, reference_summary=d.reference,
                               split=d.split, content_hash=key)
                self.db.add(doc)
                self.report.documents_added += 1
            else:
                self._load_existing(key, doc)
            self.docs[key] = doc
        return key, self.docs[key]

    def _load_existing(self, key: str, doc: Document) -> None:
        self.report.documents_existing += 1
        with self.db.no_autoflush:
            for cand in self.db.scalars(select(Candidate).where(Candidate.document_id == doc.id)):
                self.candidates[(key, cand.text_hash)] = cand
            tasks = self.db.scalars(select(ComparisonTask).options(selectinload(ComparisonTask.slots))
                                    .where(ComparisonTask.document_id == doc.id)).all()
            for task in tasks:
                hashes = frozenset(s.candidate.text_hash for s in task.slots)
                self.tasks[(key, hashes)] = task
            judged = self.db.execute(select(Judgement.task_id, Judgement.rater_id)
                                     .where(Judgement.task_id.in_([t.id for t in tasks])))
            self.judged_by.update((task_id, rater_id) for task_id, rater_id in judged)

    def candidate(self, doc_key: str, doc: Document, text: str, meta: dict[str, Any] | None) -> tuple[str, Candidate]:
        key = (doc_key, digest(text))
        if key not in self.candidates:
            self.candidates[key] = Candidate(document=doc, text=text, text_hash=key[1],
                                             origin=CandidateOrigin.IMPORTED, meta=meta)
            self.report.candidates_added += 1
        return key[1], self.candidates[key]

    def outputs(self, item: _Outputs, file: str) -> None:
        """A document and its models' summaries, as candidates of external model versions. A
        summary already stored for the document (from any source) is kept as it was."""
        doc_key, doc = self.document(item.doc)
        for text, model in item.outputs:
            key = (doc_key, digest(text))
            if key not in self.candidates:
                # Added by hand: no task holds these yet to carry them into the session.
                self.candidates[key] = Candidate(document=doc, text=text, text_hash=key[1],
                                                 origin=CandidateOrigin.MODEL,
                                                 model_version=self.external_model(model, file, item.line))
                self.db.add(self.candidates[key])
                self.report.candidates_added += 1

    def external_model(self, name: str, file: str, line: int) -> ModelVersion:
        if name not in self.models:
            with self.db.no_autoflush:
                version = self.db.scalar(select(ModelVersion).where(ModelVersion.name == name))
            if version is not None and version.kind != ModelKind.EXTERNAL:
                raise InvalidInput(f"{name!r} is the name of one of Calibra's own {version.kind.value} versions; "
                                   "name your model differently", file=file, line=line, field="model")
            if version is None:
                version = ModelVersion(kind=ModelKind.EXTERNAL, name=name, base_model="external",
                                       config={"imported_from": file.rsplit("/", 1)[-1]})
                self.db.add(version)
                self.report.model_versions_added += 1
            self.models[name] = version
        return self.models[name]

    def rater(self, name: str) -> Rater:
        if name not in self.raters:
            with self.db.no_autoflush:
                rater = self.db.scalar(select(Rater).where(Rater.name == name))
            if rater is None:
                # Imported raters have no password: they exist for provenance, not to log in.
                rater = Rater(name=name, password_hash=None, active=False)
                self.db.add(rater)
                self.report.raters_added += 1
            self.raters[name] = rater
        return self.raters[name]

    def judged(self, item: _Judged, batch: str) -> None:
        doc_key, doc = self.document(item.doc)
        metas = item.meta or (None,) * len(item.summaries)
        cands = [self.candidate(doc_key, doc, text, meta) for text, meta in zip(item.summaries, metas, strict=True)]
        best = cands[item.best][1]
        # Without the order the rater saw, the canonical one is stored: chosen-first would look
        # like a rater who always picks the first summary.
        shown = [c for _, c in (cands if item.shown_in_order else sorted(cands, key=lambda hc: hc[0]))]
        self.judgement(self.task(doc_key, doc, cands, batch), self.rater(item.rater), shown, best, [])

    def rated(self, post_id: str, rater_name: str, items: list[_Rated], batch: str) -> None:
        """One rater's ratings of summaries of one post: judgements without a best choice, in
        tasks of at most four summaries (a rater may have rated up to eight of a post)."""
        doc_key, doc = self.text_less_document(post_id)
        rater = self.rater(rater_name)
        by_candidate: dict[str, tuple[tuple[str, Candidate], _Rated]] = {}
        for r in items:  # texts equal up to surrounding space are one candidate: first rating kept
            hc = self.candidate(doc_key, doc, r.summary, {"summary_id": r.summary_id})
            by_candidate.setdefault(hc[0], (hc, r))
        rated = [by_candidate[h] for h in sorted(by_candidate)]
        for start in range(0, len(rated), 4):
            chunk = rated[start:start + 4]
            cands = [hc for hc, _ in chunk]
            ratings = [CandidateRating(candidate=c, quality=r.scores["overall"], factual=None,
                                       extra={k: v for k, v in r.scores.items() if k != "overall"})
                       for (_, c), r in chunk]
            self.judgement(self.task(doc_key, doc, cands, batch), rater, [c for _, c in cands], None, ratings)

    def text_less_document(self, post_id: str) -> tuple[str, Document]:
        """The document with this external id (its text may come later, or never)."""
        if post_id not in self.by_external_id:
            with self.db.no_autoflush:
                doc = self.db.scalars(select(Document).where(Document.external_id == post_id)).first()
            if doc is None:
                doc = Document(source=self.source, external_id=post_id, text="", has_text=False,
                               content_hash=digest(f"text-less document {self.source}/{post_id}"))
                self.db.add(doc)
                self.report.documents_added += 1
            else:
                self._load_existing(doc.content_hash, doc)
            self.docs[doc.content_hash] = doc
            self.by_external_id[post_id] = (doc.content_hash, doc)
        return self.by_external_id[post_id]

    def task(self, doc_key: str, doc: Document, cands: list[tuple[str, Candidate]], batch: str) -> ComparisonTask:
        task_key = (doc_key, frozenset(h for h, _ in cands))
        if task_key not in self.tasks:
            ordered = sorted(cands, key=lambda hc: hc[0])  # canonical slots say nothing of the choice
            task = ComparisonTask(document=doc, replication_target=1, batch=batch,
                                  slots=[TaskCandidate(candidate=c, slot=i) for i, (_, c) in enumerate(ordered)])
            self.db.add(task)
            self.tasks[task_key] = task
            self.report.tasks_added += 1
        return self.tasks[task_key]

    def judgement(self, task: ComparisonTask, rater: Rater, shown: list[Candidate], best: Candidate | None,
                  ratings: list[CandidateRating]) -> None:
        seen = (id(task), id(rater))
        if seen in self.judged_by or (task.id, rater.id) in self.judged_by:
            self.report.judgements_existing += 1
            return
        self.judged_by.add(seen)
        now = utcnow()
        assignment = Assignment(task=task, rater=rater, status=AssignmentStatus.SUBMITTED,
                                leased_at=now, completed_at=now, display_order=[])
        self.pending_orders.append((assignment, shown))
        self.db.add(Judgement(assignment=assignment, task=task, rater=rater, best_candidate=best, ratings=ratings))
        # Imported tasks are complete as they stand: the target follows what was imported, so
        # they never enter an annotator's queue.
        task.judgement_count = (task.judgement_count or 0) + 1
        task.replication_target = max(task.replication_target or 1, task.judgement_count)
        self.report.judgements_added += 1

    def finish(self) -> None:
        self.db.flush()
        # Display orders are candidate ids, known only once the candidates are inserted.
        for assignment, shown in self.pending_orders:
            assignment.display_order = [c.id for c in shown]
        self.db.flush()
