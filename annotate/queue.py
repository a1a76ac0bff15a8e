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

import functools
import random
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import (
    ColumnElement,
    ScalarSelect,
    Select,
    SQLColumnExpression,
    and_,
    bindparam,
    exists,
    func,
    or_,
    select,
    true,
)
from sqlalchemy.orm import Session

from db.models import (
    Assignment,
    AssignmentStatus,
    ComparisonTask,
    Document,
    Rater,
    TaskCandidate,
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


def _live_lease(now: datetime | SQLColumnExpression[datetime]) -> ColumnElement[bool]:
    return and_(Assignment.status == AssignmentStatus.LEASED, Assignment.lease_expires_at > now)


def _held(task_id: int | SQLColumnExpression[int], now: datetime | SQLColumnExpression[datetime],
          rater_id: int | SQLColumnExpression[int] | None = None) -> ScalarSelect[int]:
    """Submitted judgements plus live leases of others: what counts against the target."""
    others = Assignment.rater_id != rater_id if rater_id is not None else true()
    return (select(func.count()).select_from(Assignment)
            .where(Assignment.task_id == task_id,
                   or_(Assignment.status == AssignmentStatus.SUBMITTED, and_(_live_lease(now), others)))
            .scalar_subquery())


def open_tasks_query(rater_id: int | SQLColumnExpression[int], now: datetime | SQLColumnExpression[datetime], *,
                     gold: bool | None = None, round_: int | SQLColumnExpression[int] | None = None,
                     batch: str | SQLColumnExpression[str] | None = None) -> Select[int]:
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


# The statements of every next_task are built once, with their values bound per request: building
# the queue query's expression anew cost more than running it.
@functools.cache
def _window(gold: bool, by_round: bool, by_batch: bool) -> Select[int]:
    """The best open tasks after those already tried, in queue order, for one shape of policy."""
    query = open_tasks_query(bindparam("rater_id"), bindparam("now"), gold=gold,
                             round_=bindparam("round") if by_round else None,
                             batch=bindparam("batch") if by_batch else None)
    return (query.where(ComparisonTask.id.not_in(bindparam("tried", expanding=True)))
            .order_by(ComparisonTask.priority.desc(), ComparisonTask.judgement_count, ComparisonTask.id)
            .limit(CANDIDATE_WINDOW))


_CURRENT = (select(Assignment).where(Assignment.rater_id == bindparam("rater_id"), _live_lease(bindparam("now")))
            .order_by(Assignment.leased_at).limit(1))
_LOCK_TASK = (select(ComparisonTask.replication_target).where(ComparisonTask.id == bindparam("task_id"))
              .with_for_update())
_HELD = select(_held(bindparam("task_id"), bindparam("now"), bindparam("rater_id")))
_SLOTS = (select(TaskCandidate.candidate_id).where(TaskCandidate.task_id == bindparam("task_id"))
          .order_by(TaskCandidate.slot))
_MINE = select(Assignment).where(Assignment.task_id == bindparam("task_id"),
                                 Assignment.rater_id == bindparam("rater_id"))


def current_assignment(db: Session, rater: Rater, now: datetime) -> Assignment | None:
    return db.scalar(_CURRENT, {"rater_id": rater.id, "now": now})


def next_assignment(db: Session, rater: Rater, policy: QueuePolicy = QueuePolicy(), *,
                    now: datetime | None = None, rng: random.Random | None = None) -> Assignment | None:
    """The rater's live lease if they hold one, else a new lease on the best open task."""
    now = now or utcnow()
    rng = rng or random.Random()
    held = current_assignment(db, rater, now)
    if held is not None:
        return held
    values: dict[str, object] = {"rater_id": rater.id, "now": now}
    if policy.round is not None:
        values["round"] = policy.round
    if policy.batch is not None:
        values["batch"] = policy.batch
    prefer_gold = rng.random() < policy.gold_rate
    for gold in ((True, False) if prefer_gold else (False, True)):
        window = _window(gold, policy.round is not None, policy.batch is not None)
        tried: list[int] = []
        # The window is read again once it is used up: under a burst, others may fill every task
        # of the first window while this request waits for their row locks, with open tasks
        # beyond it (seen on PostgreSQL: 4 of 100 raters asking at once were told "no task").
        while ids := db.scalars(window, {**values, "tried": tried}).all():
            for task_id in ids:
                assignment = _try_lease(db, task_id, rater, now, policy.lease, rng)
                if assignment is not None:
                    return assignment
            tried.extend(ids)
    return None


def _try_lease(db: Session, task_id: int, rater: Rater, now: datetime, lease: timedelta,
               rng: random.Random) -> Assignment | None:
    """A lease on this task, or None. On PostgreSQL a try that fails gives its task's row lock
    back (a savepoint rolled back): the window's order follows judgement counts that move, so two
    requests may walk the same tasks in different orders, and each holding the lock of a task it
    could not lease while waiting for the other's would deadlock. SQLite locks the whole database
    instead of rows."""
    if db.get_bind().dialect.name != "postgresql":
        return _lease(db, task_id, rater, now, lease, rng)
    savepoint = db.begin_nested()
    try:
        leased = _lease(db, task_id, rater, now, lease, rng)
    except BaseException:
        savepoint.rollback()
        raise
    if leased is None:
        savepoint.rollback()
    else:
        savepoint.commit()  # RELEASE SAVEPOINT: the transaction keeps the task's lock until it ends
    return leased


def _lease(db: Session, task_id: int, rater: Rater, now: datetime, lease: timedelta,
           rng: random.Random) -> Assignment | None:
    # The task row is locked before its leases are counted (on SQLite the transaction holds the
    # database's write lock already): the count includes whatever the lock's last holder committed.
    target = db.scalar(_LOCK_TASK, {"task_id": task_id})
    at = {"task_id": task_id, "rater_id": rater.id}
    if target is None or (db.scalar(_HELD, {**at, "now": now}) or 0) >= target:
        return None
    mine = db.scalar(_MINE, at)
    if mine is None:
        order = list(db.scalars(_SLOTS, at))
        rng.shuffle(order)  # per rater: position tells nothing about the source
        mine = Assignment(task_id=task_id, rater_id=rater.id, display_order=order)
        db.add(mine)
    elif mine.status in FINISHED:
        return None  # judged or skipped by this rater already: never twice
    # An expired lease of this rater's own is renewed in place (one row per rater and task).
    mine.status, mine.leased_at, mine.lease_expires_at = AssignmentStatus.LEASED, now, now + lease
    db.flush()
    return mine


def _left_in_queue() -> ColumnElement[int]:
    """Tasks still open to the rater `rater_id`: below their target and not yet judged or skipped
    by them.

    Shown with every next_task, so it is two index-backed counts (all open tasks, minus the
    rater's finished ones among them) instead of the queue's full test per task (its locks and
    leases), which cost more than the rest of next_task on a queue of 3,000 tasks. Tasks whose
    last places others hold leases on count as open: the leases may lapse."""
    open_task = and_(Document.has_text.is_(True), ComparisonTask.judgement_count < ComparisonTask.replication_target)
    all_open = (select(func.count()).select_from(ComparisonTask)
                .join(Document, Document.id == ComparisonTask.document_id).where(open_task))
    finished = (select(func.count()).select_from(Assignment)
                .join(ComparisonTask, ComparisonTask.id == Assignment.task_id)
                .join(Document, Document.id == ComparisonTask.document_id)
                .where(Assignment.rater_id == bindparam("rater_id"), Assignment.status.in_(FINISHED), open_task))
    return all_open.scalar_subquery() - finished.scalar_subquery()


LEFT_IN_QUEUE = _left_in_queue()
"""An expression for `queue_size`, to select beside other per-rater counts (bind `rater_id`)."""


def queue_size(db: Session, rater: Rater) -> int:
    """Tasks still open to this rater (`LEFT_IN_QUEUE`)."""
    return db.scalar(select(LEFT_IN_QUEUE), {"rater_id": rater.id}) or 0
