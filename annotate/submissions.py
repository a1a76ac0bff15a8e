"""Judgements and skips, validated on the server; a retried submit stores nothing twice."""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import Row, bindparam, insert, select, update
from sqlalchemy.orm import Session

from annotate.errors import InvalidInput, NotFound
from db.models import (
    Assignment,
    AssignmentStatus,
    CandidateRating,
    ComparisonTask,
    Judgement,
    Rater,
    Strength,
    utcnow,
)

LETTERS = "ABCD"
SKIP_REASONS = ("can't judge", "offensive content", "broken or empty text", "other")


@dataclass(frozen=True)
class SummaryRating:
    quality: int | None  # 1-7
    factual: bool | None


@dataclass(frozen=True)
class Submission:
    """What the rater sends, in terms of the letters they saw (A is the first summary shown)."""

    best: str | None
    ratings: dict[str, SummaryRating] = field(default_factory=dict)
    strength: str | None = None
    all_unacceptable: bool = False
    comment: str | None = None


_OWNER = select(Assignment.task_id).where(Assignment.id == bindparam("assignment_id"),
                                          Assignment.rater_id == bindparam("rater_id"))
_LOCK_TASK = (select(ComparisonTask.judgement_count, ComparisonTask.replication_target)
              .where(ComparisonTask.id == bindparam("task_id")).with_for_update())
# populate_existing: the row as committed by whoever held the lock before, not as cached.
_LOCK_ASSIGNMENT = (select(Assignment).where(Assignment.id == bindparam("assignment_id")).with_for_update()
                    .execution_options(populate_existing=True))
_STORED = select(Judgement.id).where(Judgement.assignment_id == bindparam("assignment_id"))
# The counter moves in SQL, not in Python, so concurrent submits cannot lose an increment.
_ONE_MORE = (update(ComparisonTask).where(ComparisonTask.id == bindparam("task_id"))
             .values(judgement_count=ComparisonTask.judgement_count + 1))


def _own_assignment(db: Session, assignment_id: int, rater: Rater) -> tuple[Assignment, Row[int, int]]:
    """The rater's assignment and its task's judgement count and target, both rows locked, the
    task first: the queue locks the task row before it counts leases, so a submit and a new lease
    on the same task take turns (in the same order, so they cannot deadlock), and two submits of
    one assignment (a double click) too."""
    task_id = db.scalar(_OWNER, {"assignment_id": assignment_id, "rater_id": rater.id})
    if task_id is None:
        raise NotFound(f"no assignment {assignment_id} for {rater.name}")
    counts = db.execute(_LOCK_TASK, {"task_id": task_id}).one()
    return db.scalars(_LOCK_ASSIGNMENT, {"assignment_id": assignment_id}).one(), counts


def validate(assignment: Assignment, sub: Submission, now: datetime) -> None:
    letters = list(LETTERS[:len(assignment.display_order)])  # a list: "AB" is in "ABCD" but is no letter
    if assignment.status != AssignmentStatus.LEASED:
        raise InvalidInput(f"this task was already {assignment.status.value}", field="assignment")
    if assignment.lease_expires_at is not None and assignment.lease_expires_at <= now:
        raise InvalidInput("the lease on this task expired; open the next task", field="assignment")
    if not sub.best:
        raise InvalidInput("choose the best summary", field="best")
    if sub.best not in letters:
        raise InvalidInput(f"{sub.best!r} was not shown; choose one of {', '.join(letters)}", field="best")
    for letter in letters:
        rating = sub.ratings.get(letter)
        if rating is None or rating.quality is None:
            raise InvalidInput(f"rate the overall quality of summary {letter}", field=f"quality_{letter}")
        if type(rating.quality) is not int or not 1 <= rating.quality <= 7:  # a bool is no rating
            raise InvalidInput(f"quality of summary {letter} must be 1-7, got {rating.quality!r}",
                               field=f"quality_{letter}")
        if rating.factual is None:
            raise InvalidInput(f"say whether summary {letter} is factual", field=f"factual_{letter}")
        if type(rating.factual) is not bool:
            raise InvalidInput(f"factual for summary {letter} must be true or false", field=f"factual_{letter}")
    extra = set(sub.ratings) - set(letters)
    if extra:
        raise InvalidInput(f"summaries {', '.join(sorted(extra))} were not shown", field="ratings")
    if sub.strength is not None and sub.strength not in {s.value for s in Strength}:
        raise InvalidInput(f"must be one of {', '.join(s.value for s in Strength)}", field="strength")


def submit(db: Session, assignment_id: int, rater: Rater, sub: Submission, *,
           now: datetime | None = None) -> int:
    """Store the judgement; its id. Submitting the same assignment again returns the stored one's."""
    assignment, (judgement_count, target) = _own_assignment(db, assignment_id, rater)
    now = now or utcnow()  # read after the locks: a lease that expired while waiting has expired
    if assignment.status == AssignmentStatus.SUBMITTED:
        stored = db.scalar(_STORED, {"assignment_id": assignment.id})
        if stored is not None:
            return stored  # a double click or a retried request
    validate(assignment, sub, now)
    if judgement_count >= target:
        # A late submit on a lease that expired as another rater took the task: the target holds.
        raise InvalidInput("this task already has all its judgements; open the next task", field="assignment")
    assert sub.best is not None  # validate() refuses a submission without one
    shown = dict(zip(LETTERS, assignment.display_order, strict=False))
    # Plain inserts rather than the ORM's unit of work: this runs once per judgement, in the write lock.
    conn = db.connection()
    judgement_id: int = conn.execute(insert(Judgement).returning(Judgement.id), {
        "assignment_id": assignment.id, "task_id": assignment.task_id, "rater_id": rater.id,
        "best_candidate_id": shown[sub.best], "strength": Strength(sub.strength) if sub.strength else None,
        "all_unacceptable": sub.all_unacceptable, "comment": (sub.comment or "").strip() or None,
        "time_taken_s": (now - assignment.leased_at).total_seconds(), "created_at": now}).scalar_one()
    conn.execute(insert(CandidateRating), [
        {"judgement_id": judgement_id, "candidate_id": shown[letter], "quality": r.quality, "factual": r.factual}
        for letter, r in sub.ratings.items()])
    conn.execute(_ONE_MORE, {"task_id": assignment.task_id})
    assignment.status, assignment.completed_at = AssignmentStatus.SUBMITTED, now
    db.flush()
    return judgement_id


def skip(db: Session, assignment_id: int, rater: Rater, reason: str, *, now: datetime | None = None) -> Assignment:
    """Give the task back: it goes to other raters and never returns to this one."""
    reason = (reason or "").strip()
    if not reason:
        raise InvalidInput(f"give a reason, e.g. {', '.join(SKIP_REASONS)}", field="reason")
    assignment, _ = _own_assignment(db, assignment_id, rater)
    if assignment.status != AssignmentStatus.LEASED:
        raise InvalidInput(f"this task was already {assignment.status.value}", field="assignment")
    assignment.status, assignment.skip_reason = AssignmentStatus.SKIPPED, reason[:256]
    assignment.completed_at = now or utcnow()
    db.flush()
    return assignment
