"""What an annotator may see of a task: text and letters, never ids, model names or scores."""
from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from annotate.queue import QueuePolicy, current_assignment, next_assignment, queue_size
from annotate.submissions import LETTERS
from db.engine import Transactions
from db.models import Assignment, Candidate, Document, Judgement, Rater, utcnow


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


def task_view(db: Session, assignment: Assignment) -> TaskView:
    doc = db.get(Document, assignment.task.document_id)
    assert doc is not None
    rows = db.execute(select(Candidate.id, Candidate.text).where(Candidate.id.in_(assignment.display_order)))
    texts = {cid: text for cid, text in rows}
    source = f"r/{doc.subreddit}" if doc.subreddit else doc.source
    expires = assignment.lease_expires_at.isoformat(timespec="seconds") if assignment.lease_expires_at else ""
    return TaskView(assignment_id=assignment.id, title=doc.title or "", source=source, text=doc.text,
                    summaries=[SummaryView(letter, texts[cid])
                               for letter, cid in zip(LETTERS, assignment.display_order, strict=False)],
                    lease_expires_at=expires)


def progress(db: Session, rater: Rater, now: datetime | None = None) -> Progress:
    now = now or utcnow()
    midnight = now.replace(hour=0, minute=0, second=0, microsecond=0)
    judged = db.scalar(select(func.count()).select_from(Judgement).where(
        Judgement.rater_id == rater.id, Judgement.created_at >= midnight,
        Judgement.created_at < midnight + timedelta(days=1))) or 0
    return Progress(judged_today=judged, left_in_queue=queue_size(db, rater))


def next_task(tx: Transactions, read: Transactions, rater: Rater,
              policy: QueuePolicy) -> tuple[TaskView | None, Progress]:
    """What `next_task` answers, for the page and every API alike: the rater's current task (or a
    new lease on the next one), and their progress.

    Only a new lease is written, in a transaction of its own. Whether a lease is already held,
    the task's text and the progress counts are read in snapshots (`read`), which on SQLite run
    beside other raters' writes instead of inside its one write lock."""
    with read() as db:
        held = current_assignment(db, rater, utcnow())
        held_id = held.id if held is not None else None
    if held_id is None:
        with tx() as db:
            leased = next_assignment(db, rater, policy)
            held_id = leased.id if leased is not None else None
    with read() as db:
        assignment = db.get(Assignment, held_id) if held_id is not None else None
        return (task_view(db, assignment) if assignment is not None else None), progress(db, rater)
