"""Import documents and human judgements from files.

Four layouts, detected from the fields of the first record:
- documents: one document per record, fields chosen by a `FieldMap` (the TL;DR test posts
  `instruction_id/subreddit/title/instruction/gold_response` are a preset);
- pairs: `prompt/chosen/rejected`, a document, two candidates, a task and one judgement each;
- comparisons: `post_id/post/summary_0/summary_1/choice/worker`, the same with the rater's id
  and the per-summary rating means kept on the candidates;
- ratings: `post_id/summary/worker/overall`, each rater's 1-7 scores per summary (posts known
  only by id become text-less documents, never served).

Every record is validated before anything is written, and the caller's transaction holds the
whole file, so a bad record leaves the database as it was.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

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
    Rater,
    TaskCandidate,
    digest,
    utcnow,
)

LAYOUTS = ("auto", "documents", "pairs", "comparisons", "ratings")
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


def detect_layout(keys: Iterable[str]) -> str:
    keys = set(keys)
    if {"prompt", "chosen", "rejected"} <= keys:
        return "pairs"
    if {"post", "summary_0", "summary_1", "choice"} <= keys:
        return "comparisons"
    if {"post_id", "summary", "worker", "overall"} <= keys:
        return "ratings"
    return "documents"


def import_records(db: Session, records: Iterable[Record], *, file: str, source: str = "import",
                   layout: str = "auto", fields: FieldMap | None = None, split: str | None = None,
                   max_chars: int = 40_000) -> ImportReport:
    """Validate every record, then add what is new. Raises `InvalidInput` before any write."""
    rows = list(records)
    if not rows:
        raise InvalidInput("the file has no records", file=file)
    if layout not in LAYOUTS:
        raise InvalidInput(f"unknown layout {layout!r}; use one of {', '.join(LAYOUTS)}", file=file)
    fields = fields or _default_fields(rows[0])
    if layout == "auto":
        layout = detect_layout(rows[0].data.keys())
    parsers: dict[str, Callable[[Record, str, FieldMap, int], DocFields | _Judged | _Rated]] = {
        "documents": _parse_document, "pairs": _parse_pair, "comparisons": _parse_comparison,
        "ratings": _parse_rating}
    parse = parsers[layout]
    parsed: list[DocFields | _Judged | _Rated] = [parse(r, file, fields, max_chars) for r in rows]
    if split is not None:
        parsed = [_with_split(p, split) for p in parsed]

    writer = _Writer(db, source, ImportReport(layout=layout, records=len(rows)))
    batch = f"import:{file.rsplit('/', 1)[-1]}"
    groups: dict[tuple[str, str], list[_Rated]] = {}
    for item in parsed:
        if isinstance(item, DocFields):
            writer.document(item)
        elif isinstance(item, _Rated):
            groups.setdefault((item.post_id, item.rater), []).append(item)
        else:
            writer.judged(item, batch)
    for (post_id, rater), items in groups.items():
        writer.rated(post_id, rater, items, batch)
    writer.finish()
    return writer.report


def import_files(tx: Transactions, files: Sequence[Path], *, fmt: str = "auto", source: str | None = None,
                 layout: str = "auto", fields: FieldMap | None = None, split: str | None = None,
                 max_chars: int = 40_000) -> dict[str, Any]:
    """Import each file in a transaction of its own (a bad file stores nothing of itself), and
    the counts added up; the source label defaults to the file's name."""
    totals: dict[str, Any] = {}
    for path in files:
        with tx() as db:
            report = import_records(db, read_records(path, fmt), file=str(path), source=source or path.stem,
                                    layout=layout, fields=fields, split=split, max_chars=max_chars)
        for key, value in report.as_dict().items():
            totals[key] = value if isinstance(value, str) else totals.get(key, 0) + value
    return totals


def parse_documents(records: list[Record], *, file: str, fields: FieldMap | None = None,
                    max_chars: int = 40_000) -> list[tuple[int, DocFields]]:
    """Validated documents of a documents-layout file, with their line numbers; writes nothing."""
    if not records:
        raise InvalidInput("the file has no records", file=file)
    fields = fields or _default_fields(records[0])
    return [(r.line, _parse_document(r, file, fields, max_chars)) for r in records]


def _default_fields(first: Record) -> FieldMap:
    return TLDR_POSTS if set(asdict(TLDR_POSTS).values()) - {None} <= first.data.keys() else FieldMap()


def _with_split(item: DocFields | _Judged | _Rated, split: str) -> DocFields | _Judged | _Rated:
    if isinstance(item, DocFields):
        return replace(item, split=split)
    if isinstance(item, _Rated):
        return item  # text-less documents carry no split
    return replace(item, doc=replace(item.doc, split=split))


@dataclass(frozen=True)
class _Rated:
    """One rater's scores for one summary of a post known only by its id."""

    post_id: str
    summary: str
    summary_id: Any
    rater: str
    scores: dict[str, int | None]


# --- parsing: pure functions from a record to plain values ------------------------------------

def _text(record: Record, file: str, name: str, *, required: bool, max_chars: int | None = None) -> str | None:
    value = record.data.get(name)
    if value is None:
        if required:
            raise InvalidInput("missing required field", file=file, line=record.line, field=name)
        return None
    if not isinstance(value, (str, int, float)):
        raise InvalidInput(f"expected text, got {type(value).__name__}", file=file, line=record.line, field=name)
    text = str(value).strip()
    if required and not text:
        raise InvalidInput("is empty", file=file, line=record.line, field=name)
    if max_chars is not None and len(text) > max_chars:
        raise InvalidInput(f"has {len(text):,} characters; the limit is {max_chars:,} "
                           "(setting max_document_chars)", file=file, line=record.line, field=name)
    return text or None


def _parse_document(record: Record, file: str, fields: FieldMap, max_chars: int) -> DocFields:
    def optional(name: str | None) -> str | None:
        return _text(record, file, name, required=False) if name else None

    return DocFields(text=_text(record, file, fields.text, required=True, max_chars=max_chars) or "",
                title=optional(fields.title), external_id=optional(fields.id),
                reference=optional(fields.reference), subreddit=optional(fields.subreddit),
                split=optional(fields.split))


def _summary(record: Record, file: str, name: str) -> str:
    text = bare_summary(_text(record, file, name, required=True) or "")
    if not text:
        raise InvalidInput("is empty after its 'TL;DR:' prefix", file=file, line=record.line, field=name)
    return text


def _parse_pair(record: Record, file: str, fields: FieldMap, max_chars: int) -> _Judged:
    prompt = _text(record, file, "prompt", required=True, max_chars=max_chars) or ""
    parts = prompt_parts(prompt)
    doc = DocFields(text=parts[0], title=parts[1], subreddit=parts[2]) if parts else DocFields(text=prompt)
    if not doc.text:
        raise InvalidInput("has an empty POST part", file=file, line=record.line, field="prompt")
    chosen, rejected = _summary(record, file, "chosen"), _summary(record, file, "rejected")
    if chosen == rejected:
        raise InvalidInput("chosen and rejected are the same text", file=file, line=record.line, field="rejected")
    return _Judged(doc=doc, summaries=(chosen, rejected), best=0, rater=PAIRS_RATER, shown_in_order=False)


def _parse_comparison(record: Record, file: str, fields: FieldMap, max_chars: int) -> _Judged:
    doc = DocFields(text=_text(record, file, "post", required=True, max_chars=max_chars) or "",
               external_id=_text(record, file, "post_id", required=False),
               title=_text(record, file, "title", required=False),
               subreddit=_text(record, file, "subreddit", required=False))
    summaries = (_summary(record, file, "summary_0"), _summary(record, file, "summary_1"))
    choice = record.data.get("choice")
    if choice not in (0, 1, "0", "1"):
        raise InvalidInput(f"must be 0 or 1, got {choice!r}", file=file, line=record.line, field="choice")
    rater = _text(record, file, "worker", required=True) or ""
    meta = tuple({"summary_id": record.data.get(f"summary_id_{i}"), "axis": record.data.get(f"axis_{i}")}
                 for i in range(2))
    return _Judged(doc=doc, summaries=summaries, best=int(choice), rater=rater, meta=meta)


def _parse_rating(record: Record, file: str, fields: FieldMap, max_chars: int) -> _Rated:
    scores: dict[str, int | None] = {}
    for axis in AXES:
        value = record.data.get(axis)
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))
                                  or value != int(value) or not 1 <= value <= 7):
            raise InvalidInput(f"must be a whole number from 1 to 7, got {value!r}",
                               file=file, line=record.line, field=axis)
        scores[axis] = None if value is None else int(value)
    return _Rated(post_id=_text(record, file, "post_id", required=True) or "",
                  summary=_summary(record, file, "summary"), summary_id=record.data.get("summary_id"),
                  rater=_text(record, file, "worker", required=True) or "", scores=scores)


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
