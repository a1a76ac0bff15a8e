"""The tables of the whole feedback loop: documents, candidates, tasks, judgements, models, rounds.

Rules that must hold even under concurrent writers (one judgement per assignment, one
assignment per rater and task, ratings in range) live here as constraints, not in callers.
"""
from __future__ import annotations

import enum
import hashlib
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    CheckConstraint,
    DateTime,
    Enum,
    Float,
    ForeignKey,
    Index,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

# Named constraints let Alembic's batch mode drop and recreate them on SQLite.
NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def digest(text: str) -> str:
    """The hash that deduplicates documents and candidates: same text, same row."""
    return hashlib.sha256(text.strip().encode("utf-8")).hexdigest()


def utcnow() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map = {dict[str, Any]: JSON, list[Any]: JSON, datetime: DateTime()}


def _enum(cls: type[enum.Enum]) -> Enum:
    # Stored as strings with a CHECK, so adding a member is a plain migration on any backend.
    return Enum(cls, native_enum=False, values_callable=lambda e: [m.value for m in e],
                length=24, validate_strings=True)


class ModelKind(str, enum.Enum):
    POLICY = "policy"
    REWARD = "reward"
    RANKER = "ranker"
    BACKBONE = "backbone"  # a pretrained encoder that reward/ranker models start from
    EXTERNAL = "external"  # a model known only by its imported outputs (no weights here)


class ModelStatus(str, enum.Enum):
    REGISTERED = "registered"
    ACTIVE = "active"
    RETIRED = "retired"
    FAILED = "failed"


class CandidateOrigin(str, enum.Enum):
    MODEL = "model"          # sampled from a registered model version
    REFERENCE = "reference"  # the document's human reference summary
    IMPORTED = "imported"    # text that came with imported human judgements


class Role(str, enum.Enum):
    ANNOTATOR = "annotator"
    ADMIN = "admin"


class AssignmentStatus(str, enum.Enum):
    LEASED = "leased"
    SUBMITTED = "submitted"
    SKIPPED = "skipped"


class Strength(str, enum.Enum):
    """How much better the best summary is than the next best (the Llama 2 scale)."""

    SIGNIFICANTLY = "significantly"
    BETTER = "better"
    SLIGHTLY = "slightly"
    NEGLIGIBLY = "negligibly"


class RoundStatus(str, enum.Enum):
    REQUESTED = "requested"  # waiting for a worker
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    SKIPPED = "skipped"  # not enough new judgements, or nothing to do; the reason is recorded
    FAILED = "failed"
    CANCELLED = "cancelled"


class StageStatus(str, enum.Enum):
    RUNNING = "running"
    DONE = "done"
    SKIPPED = "skipped"
    FAILED = "failed"


class Document(Base):
    __tablename__ = "document"
    id: Mapped[int] = mapped_column(primary_key=True)
    source: Mapped[str] = mapped_column(String(64))
    external_id: Mapped[str | None] = mapped_column(String(128))
    title: Mapped[str | None] = mapped_column(Text)
    subreddit: Mapped[str | None] = mapped_column(String(128))
    text: Mapped[str] = mapped_column(Text)
    # False for documents known only by id (ratings imported without the post): never served.
    has_text: Mapped[bool] = mapped_column(default=True)
    reference_summary: Mapped[str | None] = mapped_column(Text)
    split: Mapped[str | None] = mapped_column(String(32))
    content_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    candidates: Mapped[list[Candidate]] = relationship(back_populates="document")

    __table_args__ = (UniqueConstraint("source", "external_id"),)

    def __repr__(self) -> str:
        return f"Document(id={self.id}, source={self.source!r}, external_id={self.external_id!r})"


class ModelVersion(Base):
    __tablename__ = "model_version"
    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[ModelKind] = mapped_column(_enum(ModelKind))
    name: Mapped[str] = mapped_column(String(128), unique=True)
    base_model: Mapped[str] = mapped_column(Text)  # hub id, local folder or GGUF file
    artifact_path: Mapped[str | None] = mapped_column(Text)  # adapter or trained weights
    parent_id: Mapped[int | None] = mapped_column(ForeignKey("model_version.id"))
    round: Mapped[int | None]
    data_snapshot: Mapped[dict[str, Any] | None]
    config: Mapped[dict[str, Any] | None]
    metrics: Mapped[dict[str, Any] | None]
    status: Mapped[ModelStatus] = mapped_column(_enum(ModelStatus), default=ModelStatus.REGISTERED)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    parent: Mapped[ModelVersion | None] = relationship(remote_side=[id])

    def __repr__(self) -> str:
        return f"ModelVersion(id={self.id}, kind={self.kind.value}, name={self.name!r})"


class Candidate(Base):
    __tablename__ = "candidate"
    id: Mapped[int] = mapped_column(primary_key=True)
    document_id: Mapped[int] = mapped_column(ForeignKey("document.id", ondelete="CASCADE"))
    text: Mapped[str] = mapped_column(Text)
    text_hash: Mapped[str] = mapped_column(String(64))
    origin: Mapped[CandidateOrigin] = mapped_column(_enum(CandidateOrigin))
    model_version_id: Mapped[int | None] = mapped_column(ForeignKey("model_version.id"))
    decoding: Mapped[dict[str, Any] | None]  # temperature, top_k, ..., prompt template
    token_count: Mapped[int | None]
    meta: Mapped[dict[str, Any] | None]  # e.g. rating means that came with an import
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    document: Mapped[Document] = relationship(back_populates="candidates")
    model_version: Mapped[ModelVersion | None] = relationship()

    # The same text for the same document is one candidate, whoever produced it again.
    __table_args__ = (UniqueConstraint("document_id", "text_hash"),)

    def __repr__(self) -> str:
        return f"Candidate(id={self.id}, document_id={self.document_id}, origin={self.origin.value})"


class ComparisonTask(Base):
    __tablename__ = "comparison_task"
    id: Mapped[int] = mapped_column(primary_key=True)
    document_id: Mapped[int] = mapped_column(ForeignKey("document.id", ondelete="CASCADE"))
    replication_target: Mapped[int] = mapped_column(default=3)
    round: Mapped[int | None]
    batch: Mapped[str | None] = mapped_column(String(64))
    priority: Mapped[int] = mapped_column(default=0)
    gold_candidate_id: Mapped[int | None] = mapped_column(ForeignKey("candidate.id"))
    # Kept in step with the judgement rows inside the submitting transaction, so the queue
    # can order and filter without counting judgements on every request.
    judgement_count: Mapped[int] = mapped_column(default=0)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    document: Mapped[Document] = relationship()
    slots: Mapped[list[TaskCandidate]] = relationship(
        back_populates="task", order_by="TaskCandidate.slot", cascade="all, delete-orphan")

    __table_args__ = (
        CheckConstraint("replication_target >= 1", name="replication_positive"),
        CheckConstraint("judgement_count >= 0", name="count_nonnegative"),

    )

    @property
    def candidate_ids(self) -> list[int]:
        return [s.candidate_id for s in self.slots]

    def __repr__(self) -> str:
        return f"ComparisonTask(id={self.id}, document_id={self.document_id}, n={len(self.slots)})"


# The queue's order exactly (priority first, then fewest judgements, then oldest): the next-task
# query walks it and stops at its window instead of sorting every open task.
Index("ix_task_queue", ComparisonTask.priority.desc(), ComparisonTask.judgement_count, ComparisonTask.id)


class TaskCandidate(Base):
    """A candidate's place in a task; slot is the canonical order, not what a rater sees."""

    __tablename__ = "task_candidate"
    task_id: Mapped[int] = mapped_column(
        ForeignKey("comparison_task.id", ondelete="CASCADE"), primary_key=True)
    candidate_id: Mapped[int] = mapped_column(ForeignKey("candidate.id"), primary_key=True)
    slot: Mapped[int]

    task: Mapped[ComparisonTask] = relationship(back_populates="slots")
    candidate: Mapped[Candidate] = relationship()

    __table_args__ = (
        UniqueConstraint("task_id", "slot"),
        CheckConstraint("slot >= 0 AND slot < 4", name="slot_range"),
    )


class Rater(Base):
    __tablename__ = "rater"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    role: Mapped[Role] = mapped_column(_enum(Role), default=Role.ANNOTATOR)
    password_hash: Mapped[str | None] = mapped_column(String(128))  # None: cannot log in
    active: Mapped[bool] = mapped_column(default=True)
    # An automatic rater (`calibra simulate`): its judgements stay out of reports, exports and
    # training unless they are asked for.
    simulated: Mapped[bool] = mapped_column(default=False)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    def __repr__(self) -> str:
        return f"Rater(id={self.id}, name={self.name!r}, role={self.role.value})"


class WebSession(Base):
    """A logged-in browser or script. Kept in the database, not in one process's memory, so any
    app process accepts it and ending it (logout, deactivation, a new password) ends it for all."""

    __tablename__ = "web_session"
    id: Mapped[int] = mapped_column(primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)  # sha256: a leaked table logs nobody in
    rater_id: Mapped[int] = mapped_column(ForeignKey("rater.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime]


class LoginAttempt(Base):
    """Every login, for rate limits on failures per account name and per client address."""

    __tablename__ = "login_attempt"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(128))  # as typed: unknown names are limited too
    address: Mapped[str] = mapped_column(String(64))
    succeeded: Mapped[bool]
    at: Mapped[datetime] = mapped_column(default=utcnow)

    __table_args__ = (Index("ix_login_attempt_name_at", "name", "at"),
                      Index("ix_login_attempt_address_at", "address", "at"))


class Assignment(Base):
    __tablename__ = "assignment"
    id: Mapped[int] = mapped_column(primary_key=True)
    task_id: Mapped[int] = mapped_column(ForeignKey("comparison_task.id", ondelete="CASCADE"))
    rater_id: Mapped[int] = mapped_column(ForeignKey("rater.id"))
    display_order: Mapped[list[Any]]  # candidate ids in the order this rater sees them
    status: Mapped[AssignmentStatus] = mapped_column(
        _enum(AssignmentStatus), default=AssignmentStatus.LEASED)
    leased_at: Mapped[datetime] = mapped_column(default=utcnow)
    lease_expires_at: Mapped[datetime | None]
    completed_at: Mapped[datetime | None]
    skip_reason: Mapped[str | None] = mapped_column(String(256))

    task: Mapped[ComparisonTask] = relationship()
    rater: Mapped[Rater] = relationship()

    # Never the same rater twice on one task. The index finds a rater's live lease and finished
    # tasks on every next_task without reading every assignment.
    __table_args__ = (UniqueConstraint("task_id", "rater_id"),
                      Index("ix_assignment_rater_status", "rater_id", "status"))


class Judgement(Base):
    __tablename__ = "judgement"
    id: Mapped[int] = mapped_column(primary_key=True)
    # One judgement per assignment: a double click or a retried request cannot store two.
    assignment_id: Mapped[int] = mapped_column(ForeignKey("assignment.id"), unique=True)
    task_id: Mapped[int] = mapped_column(ForeignKey("comparison_task.id", ondelete="CASCADE"))
    rater_id: Mapped[int] = mapped_column(ForeignKey("rater.id"))
    best_candidate_id: Mapped[int | None] = mapped_column(ForeignKey("candidate.id"))
    strength: Mapped[Strength | None] = mapped_column(_enum(Strength))
    all_unacceptable: Mapped[bool] = mapped_column(default=False)
    comment: Mapped[str | None] = mapped_column(Text)
    time_taken_s: Mapped[float | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    assignment: Mapped[Assignment] = relationship()
    task: Mapped[ComparisonTask] = relationship()
    rater: Mapped[Rater] = relationship()
    best_candidate: Mapped[Candidate | None] = relationship()
    ratings: Mapped[list[CandidateRating]] = relationship(
        back_populates="judgement", cascade="all, delete-orphan")

    # The index counts a rater's judgements today (their progress) without reading every judgement.
    __table_args__ = (UniqueConstraint("task_id", "rater_id"),
                      Index("ix_judgement_rater_created", "rater_id", "created_at"))


class CandidateRating(Base):
    __tablename__ = "candidate_rating"
    id: Mapped[int] = mapped_column(primary_key=True)
    judgement_id: Mapped[int] = mapped_column(ForeignKey("judgement.id", ondelete="CASCADE"))
    candidate_id: Mapped[int] = mapped_column(ForeignKey("candidate.id"))
    quality: Mapped[int | None]  # overall quality, 1-7
    factual: Mapped[bool | None]
    extra: Mapped[dict[str, Any] | None]  # other rated axes (coverage, coherence, ...)

    judgement: Mapped[Judgement] = relationship(back_populates="ratings")
    candidate: Mapped[Candidate] = relationship()

    __table_args__ = (
        UniqueConstraint("judgement_id", "candidate_id"),
        CheckConstraint("quality IS NULL OR (quality >= 1 AND quality <= 7)", name="quality_range"),
    )


class TrainingRound(Base):
    """One round of the weekly loop: requested by an admin or the schedule, claimed by one
    worker, run stage by stage. At most one round runs at a time (a partial unique index)."""

    __tablename__ = "training_round"
    id: Mapped[int] = mapped_column(primary_key=True)
    number: Mapped[int] = mapped_column(unique=True)  # R: tasks and model versions of the round carry it
    status: Mapped[RoundStatus] = mapped_column(_enum(RoundStatus), default=RoundStatus.REQUESTED)
    options: Mapped[dict[str, Any]]  # documents, judge, mode, ... as requested
    requested_by: Mapped[str] = mapped_column(String(128))  # a user name, or "schedule"
    requested_at: Mapped[datetime] = mapped_column(default=utcnow)
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    heartbeat_at: Mapped[datetime | None]
    worker: Mapped[str | None] = mapped_column(String(128))  # host:pid of the worker that holds it
    cancel_requested: Mapped[bool] = mapped_column(default=False)
    attempts: Mapped[int] = mapped_column(default=0)  # claims: a round whose worker died is resumed
    reason: Mapped[str | None] = mapped_column(Text)  # why it was skipped, failed or cancelled
    snapshot: Mapped[dict[str, Any] | None]  # judgement id range, count and hash it trained on
    decision: Mapped[dict[str, Any] | None]  # the promotion gate's verdict and its reasons

    stages: Mapped[list[RoundStage]] = relationship(back_populates="round", order_by="RoundStage.id",
                                                    cascade="all, delete-orphan")

    __table_args__ = (
        Index("uq_training_round_one_running", "status", unique=True,
              sqlite_where=text("status = 'running'"), postgresql_where=text("status = 'running'")),
    )

    def __repr__(self) -> str:
        return f"TrainingRound(number={self.number}, status={self.status.value})"


class RoundStage(Base):
    """A stage of a round (snapshot, judges, policy, evaluate, next batch; sft in round 0), with
    its live progress while it runs and its metrics, log lines and error once it ends."""

    __tablename__ = "round_stage"
    id: Mapped[int] = mapped_column(primary_key=True)
    round_id: Mapped[int] = mapped_column(ForeignKey("training_round.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(32))
    status: Mapped[StageStatus] = mapped_column(_enum(StageStatus), default=StageStatus.RUNNING)
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[datetime | None]
    progress: Mapped[dict[str, Any] | None]  # step, total, loss, updated_at
    metrics: Mapped[dict[str, Any] | None]
    log: Mapped[str] = mapped_column(Text, default="")
    error: Mapped[str | None] = mapped_column(Text)

    round: Mapped[TrainingRound] = relationship(back_populates="stages")

    __table_args__ = (UniqueConstraint("round_id", "name"),)


class ReviewVerdict(str, enum.Enum):
    OPEN = "open"
    HUMANS_RIGHT = "humans_right"  # the task becomes a gold task with the humans' choice
    JUDGE_RIGHT = "judge_right"  # the raters of the majority are noted
    UNCLEAR = "unclear"


class DisagreementReview(Base):
    """A task where a judge confidently (P >= 0.8) prefers another summary than the humans'
    majority, for an admin to settle."""

    __tablename__ = "disagreement_review"
    id: Mapped[int] = mapped_column(primary_key=True)
    task_id: Mapped[int] = mapped_column(ForeignKey("comparison_task.id", ondelete="CASCADE"))
    round: Mapped[int]  # the training round whose judge found it
    judge: Mapped[str] = mapped_column(String(128))  # the judge version's name
    human_choice_id: Mapped[int] = mapped_column(ForeignKey("candidate.id"))
    judge_choice_id: Mapped[int] = mapped_column(ForeignKey("candidate.id"))
    confidence: Mapped[float]  # the judge's P(judge's choice > humans' choice)
    votes: Mapped[dict[str, Any]]  # candidate id -> best votes
    scores: Mapped[dict[str, Any]]  # candidate id -> the judge's P(candidate > humans' choice)
    raters: Mapped[list[Any]]  # names of who chose the humans' majority
    verdict: Mapped[ReviewVerdict] = mapped_column(_enum(ReviewVerdict), default=ReviewVerdict.OPEN)
    decided_by: Mapped[str | None] = mapped_column(String(128))
    decided_at: Mapped[datetime | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    __table_args__ = (UniqueConstraint("task_id", "judge"),)


class LoopSetting(Base):
    """A setting of the loop changed at run time (the round schedule), shared by every process:
    the worker's scheduler follows it."""

    __tablename__ = "loop_setting"
    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_by: Mapped[str] = mapped_column(String(128))


class RegistryEvent(Base):
    """A change of the active policy: a round's promotion, or an admin's promote or rollback."""

    __tablename__ = "registry_event"
    id: Mapped[int] = mapped_column(primary_key=True)
    action: Mapped[str] = mapped_column(String(32))  # promote | rollback
    model_version_id: Mapped[int] = mapped_column(ForeignKey("model_version.id"))
    previous_id: Mapped[int | None] = mapped_column(ForeignKey("model_version.id"))
    actor: Mapped[str] = mapped_column(String(128))  # a user name, or "round R"
    reason: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class CandidateScore(Base):
    """A judge's verdict on a candidate: a reward model's score, or a ranking model's
    tournament result (score = wins, rank 1 = the tournament's winner)."""

    __tablename__ = "candidate_score"
    id: Mapped[int] = mapped_column(primary_key=True)
    candidate_id: Mapped[int] = mapped_column(ForeignKey("candidate.id", ondelete="CASCADE"))
    model_version_id: Mapped[int] = mapped_column(ForeignKey("model_version.id", ondelete="CASCADE"))
    score: Mapped[float] = mapped_column(Float)  # as migration 0002 created it
    rank: Mapped[int | None]  # 1 = best among the document's scored candidates
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    __table_args__ = (UniqueConstraint("candidate_id", "model_version_id"),)
