"""Which task a rater sees next, and the lease that holds it for them.

A task is open to a rater when its document has text, the rater has not judged or skipped it,
and its submitted judgements plus unexpired leases held by others are below its replication
target. Among open tasks: highest priority first, then fewest judgements (breadth-first).
Gold tasks (a known best answer) are served at a configured rate and look like any other.

Under concurrency the count is re-checked with the task row locked (`FOR UPDATE` on
PostgreSQL; SQLite's write transactions are serialised by `BEGIN IMMEDIATE`), so two raters
asking at once never push a task past its target.
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, ScalarSelect, Select, SQLColumnExpression, and_, exists, func, or_, select, true
from sqlalchemy.orm import Session

from db.models import (
    Assignment,
    AssignmentStatus,
    ComparisonTask,
    Document,
    Rater,
    utcnow,
)

CANDIDATE_WINDOW = 32  # open tasks considered per request; the first that can be locked wins


@dataclass(frozen=True)
class QueuePolicy:
    lease: timedelta = timedelta(minutes=15)
    gold_rate: float = 0.1  # share of requests that are offered a gold task when one is open
    round: int | None = None  # only tasks of this round (simulated raters answering one batch)
    batch: str | None = None  # only tasks of this batch label

    def __post_init__(self) -> None:
        if not 0 <= self.gold_rate <= 1:
            raise ValueError("gold_rate must be between 0 and 1")


FINISHED = (AssignmentStatus.SUBMITTED, AssignmentStatus.SKIPPED)  # a rater's tasks that never come back to them


def _live_lease(now: datetime) -> ColumnElement[bool]:
    return and_(Assignment.status == AssignmentStatus.LEASED, Assignment.lease_expires_at > now)


def _held(task_id: int | SQLColumnExpression[int], now: datetime, rater_id: int | None = None) -> ScalarSelect[int]:
    """Submitted judgements plus live leases of others: what counts against the target."""
    others = Assignment.rater_id != rater_id if rater_id is not None else true()
    return (select(func.count()).select_from(Assignment)
            .where(Assignment.task_id == task_id,
                   or_(Assignment.status == AssignmentStatus.SUBMITTED, and_(_live_lease(now), others)))
            .scalar_subquery())


def open_tasks_query(rater_id: int, now: datetime, *, gold: bool | None = None,
                     round_: int | None = None, batch: str | None = None) -> Select[int]:
    done_by_rater = exists().where(
        Assignment.task_id == ComparisonTask.id, Assignment.rater_id == rater_id,
        Assignment.status.in_(FINISHED))
    query = (select(ComparisonTask.id)
             .join(Document, Document.id == ComparisonTask.document_id)
             .where(Document.has_text.is_(True),
                    ComparisonTask.judgement_count < ComparisonTask.replication_target,
                    ~done_by_rater,
                    _held(ComparisonTask.id, now, rater_id) < ComparisonTask.replication_target))
    if gold is not None:
        query = query.where(ComparisonTask.gold_candidate_id.is_not(None) if gold
                            else ComparisonTask.gold_candidate_id.is_(None))
    if round_ is not None:
        query = query.where(ComparisonTask.round == round_)
    if batch is not None:
        query = query.where(ComparisonTask.batch == batch)
    return query


def current_assignment(db: Session, rater: Rater, now: datetime) -> Assignment | None:
    return db.scalar(select(Assignment).where(Assignment.rater_id == rater.id, _live_lease(now))
                     .order_by(Assignment.leased_at))


def next_assignment(db: Session, rater: Rater, policy: QueuePolicy = QueuePolicy(), *,
                    now: datetime | None = None, rng: random.Random | None = None) -> Assignment | None:
    """The rater's live lease if they hold one, else a new lease on the best open task."""
    now = now or utcnow()
    rng = rng or random.Random()
    held = current_assignment(db, rater, now)
    if held is not None:
        return held
    order = (ComparisonTask.priority.desc(), ComparisonTask.judgement_count, ComparisonTask.id)
    prefer_gold = rng.random() < policy.gold_rate
    for gold in ((True, False) if prefer_gold else (False, True)):
        tried: list[int] = []
        # The window is read again once it is used up: under a burst, others may fill every task
        # of the first window while this request waits for their row locks, with open tasks
        # beyond it (seen on PostgreSQL: 4 of 100 raters asking at once were told "no task").
        while ids := db.scalars(open_tasks_query(rater.id, now, gold=gold, round_=policy.round, batch=policy.batch)
                                .where(ComparisonTask.id.not_in(tried))
                                .order_by(*order).limit(CANDIDATE_WINDOW)).all():
            for task_id in ids:
                assignment = _try_lease(db, task_id, rater, now, policy.lease, rng)
                if assignment is not None:
                    return assignment
            tried.extend(ids)
    return None


def _try_lease(db: Session, task_id: int, rater: Rater, now: datetime, lease: timedelta,
               rng: random.Random) -> Assignment | None:
    # populate_existing: the counts as committed by whoever held the row lock before.
    task = db.scalar(select(ComparisonTask).where(ComparisonTask.id == task_id).with_for_update()
                     .execution_options(populate_existing=True))
    if task is None or (db.scalar(select(_held(task.id, now, rater.id))) or 0) >= task.replication_target:
        return None
    order = list(task.candidate_ids)
    rng.shuffle(order)  # per rater: position tells nothing about the source
    mine = db.scalar(select(Assignment).where(Assignment.task_id == task.id, Assignment.rater_id == rater.id))
    if mine is None:
        mine = Assignment(task_id=task.id, rater_id=rater.id, display_order=order)
        db.add(mine)
    # An expired lease of this rater's own is renewed in place (one row per rater and task).
    mine.status, mine.leased_at, mine.lease_expires_at = AssignmentStatus.LEASED, now, now + lease
    db.flush()
    return mine


def queue_size(db: Session, rater: Rater) -> int:
    """Tasks still open to this rater: below their target and not yet judged or skipped by them.

    Shown with every next_task, so it is two index-backed counts (all open tasks, minus the
    rater's finished ones among them) instead of the queue's full test per task (its locks and
    leases), which cost more than the rest of next_task on a queue of 3,000 tasks. Tasks whose
    last places others hold leases on count as open: the leases may lapse."""
    open_task = and_(Document.has_text.is_(True), ComparisonTask.judgement_count < ComparisonTask.replication_target)
    all_open = db.scalar(select(func.count()).select_from(ComparisonTask)
                         .join(Document, Document.id == ComparisonTask.document_id).where(open_task)) or 0
    finished = db.scalar(select(func.count()).select_from(Assignment)
                         .join(ComparisonTask, ComparisonTask.id == Assignment.task_id)
                         .join(Document, Document.id == ComparisonTask.document_id)
                         .where(Assignment.rater_id == rater.id, Assignment.status.in_(FINISHED), open_task)) or 0
    return all_open - finished
