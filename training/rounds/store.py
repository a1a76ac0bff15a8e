"""Rounds in the database: requests, the atomic claim by one worker, heartbeats, cancellation,
stale rounds, stage records with live progress, and what `calibra round list/show` print."""
from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from db.models import LoopSetting, RoundStage, RoundStatus, StageStatus, TrainingRound, utcnow
from training.errors import UsageError
from training.rounds.config import RoundOptions

OPEN = (RoundStatus.REQUESTED, RoundStatus.RUNNING)
MAX_ATTEMPTS = 3  # a round whose worker died this often is failed rather than resumed again
LOG_LINES = 200  # a stage keeps its last lines


def request_round(db: Session, options: RoundOptions, requested_by: str) -> TrainingRound:
    """A new round, numbered after the last; refused while another is requested or running."""
    pending = db.scalar(select(TrainingRound).where(TrainingRound.status.in_(OPEN)))
    if pending is not None:
        raise UsageError(f"round {pending.number} is {pending.status.value} already; wait for it or "
                         f"`calibra round cancel {pending.number}`")
    last = db.scalar(select(func.max(TrainingRound.number)))
    round_ = TrainingRound(number=0 if last is None else last + 1, options=options.as_dict(),
                           requested_by=requested_by, status=RoundStatus.REQUESTED)
    db.add(round_)
    db.flush()
    return round_


def find_round(db: Session, number: int) -> TrainingRound:
    round_ = db.scalar(select(TrainingRound).where(TrainingRound.number == number))
    if round_ is None:
        raise UsageError(f"no round {number}; see `calibra round list`")
    return round_


def claim_next(db: Session, worker: str) -> int | None:
    """Take the oldest requested round for `worker` and return its id; None when there is none
    or another worker runs one (at most one round runs at a time, across every worker: the
    database's unique index on running rounds decides a race)."""
    candidate = db.scalar(select(TrainingRound.id).where(TrainingRound.status == RoundStatus.REQUESTED)
                          .order_by(TrainingRound.id).limit(1))
    if candidate is None:
        return None
    now = utcnow()
    try:
        with db.begin_nested():
            done = db.connection().execute(
                update(TrainingRound)
                .where(TrainingRound.id == candidate, TrainingRound.status == RoundStatus.REQUESTED)
                .values(status=RoundStatus.RUNNING, worker=worker, heartbeat_at=now,
                        started_at=func.coalesce(TrainingRound.started_at, now), attempts=TrainingRound.attempts + 1))
    except IntegrityError:
        return None  # another round is running
    return candidate if done.rowcount == 1 else None


def heartbeat(db: Session, round_id: int, worker: str) -> bool:
    """Record that the worker is alive; True when an admin asked to cancel the round."""
    db.execute(update(TrainingRound).where(TrainingRound.id == round_id, TrainingRound.worker == worker)
               .values(heartbeat_at=utcnow()))
    return bool(db.scalar(select(TrainingRound.cancel_requested).where(TrainingRound.id == round_id)))


def recover_stale(db: Session, stale_after: timedelta,
                  dead: Callable[[str], bool] = lambda worker: False) -> list[tuple[int, str]]:
    """Running rounds whose worker stopped beating (or is known to be `dead`): the stage it was
    in is marked failed, and the round goes back to the queue to resume from its last finished
    stage, or fails for good after `MAX_ATTEMPTS` claims. Never left "running"; returns
    (number, what was done)."""
    cutoff = utcnow() - stale_after
    out = []
    for round_ in db.scalars(select(TrainingRound).where(TrainingRound.status == RoundStatus.RUNNING)):
        if not (round_.heartbeat_at is None or round_.heartbeat_at < cutoff or dead(round_.worker or "")):
            continue
        since = f"{round_.heartbeat_at:%Y-%m-%d %H:%M:%S} UTC" if round_.heartbeat_at else "it started"
        why = f"worker {round_.worker} stopped (no heartbeat since {since})"
        for stage in round_.stages:
            if stage.status == StageStatus.RUNNING:
                stage.status, stage.error, stage.finished_at = StageStatus.FAILED, why, utcnow()
        if round_.cancel_requested:
            finish(db, round_, RoundStatus.CANCELLED, "cancelled while its worker was down")
            out.append((round_.number, "cancelled"))
        elif round_.attempts >= MAX_ATTEMPTS:
            finish(db, round_, RoundStatus.FAILED, f"{why}; gave up after {round_.attempts} attempts")
            out.append((round_.number, "failed"))
        else:
            round_.status, round_.worker = RoundStatus.REQUESTED, None
            out.append((round_.number, "resumed"))
    db.flush()
    return out


def cancel_round(db: Session, number: int) -> TrainingRound:
    """A requested round is cancelled at once; a running one stops at its next check (between
    stages, and between optimizer steps)."""
    round_ = find_round(db, number)
    if round_.status == RoundStatus.REQUESTED:
        finish(db, round_, RoundStatus.CANCELLED, "cancelled before it started")
    elif round_.status == RoundStatus.RUNNING:
        round_.cancel_requested = True
    else:
        raise UsageError(f"round {number} has ended ({round_.status.value}); nothing to cancel")
    db.flush()
    return round_


def finish(db: Session, round_: TrainingRound, status: RoundStatus, reason: str | None = None) -> None:
    round_.status, round_.finished_at, round_.worker = status, utcnow(), None
    if reason is not None:
        round_.reason = reason
    db.flush()


def stage_row(db: Session, round_id: int, name: str) -> RoundStage | None:
    return db.scalar(select(RoundStage).where(RoundStage.round_id == round_id, RoundStage.name == name))


def start_stage(db: Session, round_id: int, name: str) -> RoundStage:
    """The stage's row, new or reset for a new try after a failure."""
    stage = stage_row(db, round_id, name)
    if stage is None:
        stage = RoundStage(round_id=round_id, name=name, log="")
        db.add(stage)
    stage.status, stage.started_at, stage.finished_at, stage.error = StageStatus.RUNNING, utcnow(), None, None
    stage.progress = None
    db.flush()
    return stage


def end_stage(db: Session, round_id: int, name: str, status: StageStatus, *, metrics: dict[str, Any] | None = None,
              error: str | None = None) -> None:
    stage = stage_row(db, round_id, name)
    assert stage is not None
    stage.status, stage.finished_at, stage.error = status, utcnow(), error
    if metrics is not None:
        stage.metrics = metrics
    db.flush()


def add_log(db: Session, round_id: int, name: str, line: str) -> None:
    stage = stage_row(db, round_id, name)
    if stage is not None:
        lines = [*(stage.log or "").splitlines(), f"{utcnow():%H:%M:%S} {line}"][-LOG_LINES:]
        stage.log = "\n".join(lines)


def set_progress(db: Session, round_id: int, name: str, step: int, total: int, loss: float | None) -> None:
    db.execute(update(RoundStage).where(RoundStage.round_id == round_id, RoundStage.name == name)
               .values(progress={"step": step, "total": total, "loss": loss, "updated_at": utcnow().isoformat()}))


def _time(value: datetime | None) -> str | None:
    return value.isoformat(timespec="seconds") if value else None


def round_payload(round_: TrainingRound, *, stages: bool = True) -> dict[str, Any]:
    """A round as `calibra round list/show --json` print it."""
    out: dict[str, Any] = {
        "round": round_.number, "status": round_.status.value, "requested_by": round_.requested_by,
        "requested_at": _time(round_.requested_at), "started_at": _time(round_.started_at),
        "finished_at": _time(round_.finished_at), "reason": round_.reason, "options": round_.options,
        "snapshot": round_.snapshot, "decision": round_.decision, "cancel_requested": round_.cancel_requested,
        "reward_hacking": (round_.decision or {}).get("reward_hacking"),
        "attempts": round_.attempts}
    if stages:
        out["stages"] = [{"name": s.name, "status": s.status.value, "started_at": _time(s.started_at),
                          "finished_at": _time(s.finished_at), "progress": s.progress, "metrics": s.metrics,
                          "error": s.error, "log": (s.log or "").splitlines()} for s in round_.stages]
    return out


def list_rounds(db: Session) -> list[dict[str, Any]]:
    return [round_payload(r, stages=False)
            for r in db.scalars(select(TrainingRound).order_by(TrainingRound.number.desc()))]


def get_setting(db: Session, key: str) -> str | None:
    row = db.get(LoopSetting, key)
    return row.value if row is not None else None


def set_setting(db: Session, key: str, value: str, by: str) -> None:
    row = db.get(LoopSetting, key)
    if row is None:
        db.add(LoopSetting(key=key, value=value, updated_by=by))
    else:
        row.value, row.updated_by, row.updated_at = value, by, utcnow()
    db.flush()
