"""Run a claimed round stage by stage, resuming after its last finished stage."""
from __future__ import annotations

import logging
from collections.abc import Callable

from db.engine import Transactions
from db.models import RoundStatus, StageStatus, TrainingRound
from training.rounds import stages as st
from training.rounds.config import LoopSettings, RoundOptions
from training.rounds.store import add_log, end_stage, finish, set_progress, stage_row, start_stage

log = logging.getLogger(__name__)

Stage = Callable[[st.RoundContext], dict[str, object]]
ROUND_ZERO: tuple[tuple[str, Stage], ...] = (
    ("sft", st.sft), ("evaluate", st.evaluate_and_gate), ("next_batch", st.next_batch))
ROUND: tuple[tuple[str, Stage], ...] = (
    ("snapshot", st.snapshot), ("judges", st.judges), ("policy", st.policy), ("evaluate", st.evaluate_and_gate),
    ("next_batch", st.next_batch))


def stages_of(number: int) -> tuple[tuple[str, Stage], ...]:
    """Round 0 is the supervised start; every later round is the weekly loop's."""
    return ROUND_ZERO if number == 0 else ROUND


def run_round(tx: Transactions, settings: LoopSettings, make_tasks: st.TaskMaker, round_id: int,
              cancelled: Callable[[], bool]) -> RoundStatus:
    """Run every stage not finished yet; the round ends succeeded, skipped (with the reason),
    cancelled or failed (with the error). An unexpected error is logged here in full and
    recorded on the stage as one line."""
    with tx() as db:
        round_ = db.get_one(TrainingRound, round_id)
        number, options = round_.number, RoundOptions.from_dict(round_.options)
    current = {"stage": ""}

    def on_step(step: int, total: int, loss: float) -> bool:
        with tx() as db:
            set_progress(db, round_id, current["stage"], step, total, loss)
        return cancelled()

    def note(line: str) -> None:
        with tx() as db:
            add_log(db, round_id, current["stage"], line)

    ctx = st.RoundContext(tx, settings, round_id, number, options, make_tasks, on_step, note)
    for name, stage in stages_of(number):
        with tx() as db:
            row = stage_row(db, round_id, name)
            if row is not None and row.status in (StageStatus.DONE, StageStatus.SKIPPED):
                continue
        if cancelled():
            return _end(tx, round_id, RoundStatus.CANCELLED, f"cancelled before {name}")
        current["stage"] = name
        with tx() as db:
            start_stage(db, round_id, name)
        try:
            metrics = stage(ctx)
        except st.Skip as skip:
            with tx() as db:
                end_stage(db, round_id, name, StageStatus.SKIPPED, metrics={"reason": str(skip)})
                add_log(db, round_id, name, f"skipped: {skip}")
            if name == "snapshot":  # nothing new to learn from: the whole round is skipped
                return _end(tx, round_id, RoundStatus.SKIPPED, str(skip))
            continue
        except st.Cancelled:
            with tx() as db:
                end_stage(db, round_id, name, StageStatus.FAILED, error="cancelled")
            return _end(tx, round_id, RoundStatus.CANCELLED, f"cancelled during {name}")
        except Exception as exc:  # noqa: BLE001 - recorded on the round; the traceback goes to the log
            log.exception("round %s, stage %s failed", number, name)
            error = f"{type(exc).__name__}: {exc}"
            with tx() as db:
                end_stage(db, round_id, name, StageStatus.FAILED, error=error)
            return _end(tx, round_id, RoundStatus.FAILED, f"{name}: {error}")
        with tx() as db:
            end_stage(db, round_id, name, StageStatus.DONE, metrics=metrics)
    return _end(tx, round_id, RoundStatus.SUCCEEDED)


def _end(tx: Transactions, round_id: int, status: RoundStatus, reason: str | None = None) -> RoundStatus:
    with tx() as db:
        finish(db, db.get_one(TrainingRound, round_id), status, reason)
    return status
