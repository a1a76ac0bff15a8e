"""What an annotator may see of a task: text and letters, never ids, model names or scores."""
from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import bindparam, func, select
from sqlalchemy.orm import Session

from annotate.queue import LEFT_IN_QUEUE, QueuePolicy, next_assignment
from annotate.submissions import LETTERS
from db.engine import Transactions
from db.models import Assignment, Candidate, ComparisonTask, Document, Judgement, Rater, utcnow


@dataclass(frozen=True)
class SummaryView:
    letter: str
    text: str


@dataclass(frozen=True)
class TaskView:
    assignment_id: int  # a handle on this rater's lease; says nothing about the candidates
    title: str
    source: str
    text: str
    summaries: list[SummaryView]
    lease_expires_at: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Progress:
    judged_today: int
    left_in_queue: int

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


_SHOWN = (select(Document.title, Document.subreddit, Document.source, Document.text)
          .join(ComparisonTask, ComparisonTask.document_id == Document.id)
          .where(ComparisonTask.id == bindparam("task_id")))
_TEXTS = select(Candidate.id, Candidate.text).where(Candidate.id.in_(bindparam("ids", expanding=True)))


def task_view(db: Session, assignment: Assignment) -> TaskView:
    doc = db.execute(_SHOWN, {"task_id": assignment.task_id}).one()
    texts = dict(db.execute(_TEXTS, {"ids": list(assignment.display_order)}).tuples().all())
    expires = assignment.lease_expires_at.isoformat(timespec="seconds") if assignment.lease_expires_at else ""
    return TaskView(assignment_id=assignment.id, title=doc.title or "",
                    source=f"r/{doc.subreddit}" if doc.subreddit else doc.source, text=doc.text,
                    summaries=[SummaryView(letter, texts[cid])
                               for letter, cid in zip(LETTERS, assignment.display_order, strict=False)],
                    lease_expires_at=expires)


_PROGRESS = select(
    select(func.count()).select_from(Judgement)
    .where(Judgement.rater_id == bindparam("rater_id"), Judgement.created_at >= bindparam("midnight"),
           Judgement.created_at < bindparam("next_midnight")).scalar_subquery(),
    LEFT_IN_QUEUE)


def progress(db: Session, rater: Rater, now: datetime | None = None) -> Progress:
    midnight = (now or utcnow()).replace(hour=0, minute=0, second=0, microsecond=0)
    judged, left = db.execute(_PROGRESS, {"rater_id": rater.id, "midnight": midnight,
                                          "next_midnight": midnight + timedelta(days=1)}).one()
    return Progress(judged_today=judged, left_in_queue=left)


def next_task(tx: Transactions, read: Transactions, rater: Rater,
              policy: QueuePolicy) -> tuple[TaskView | None, Progress]:
    """What `next_task` answers, for the page and every API alike: the rater's current task (or a
    new lease on the next one), and their progress.

    The lease (held already, or new) is one write transaction; the task's text and the progress
    counts are read afterwards in a snapshot (`read`), which on SQLite runs beside other raters'
    writes instead of inside its one write lock."""
    with tx() as db:
        leased = next_assignment(db, rater, policy)
    with read() as db:
        return (task_view(db, leased) if leased is not None else None), progress(db, rater)
