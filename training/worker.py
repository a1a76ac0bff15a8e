"""The round worker: claims requested rounds from the database one at a time (across every
worker), runs them with a heartbeat, stops a round an admin cancelled, resumes or fails rounds
whose worker died, and keeps the round schedule.

The schedule is APScheduler 3 with its SQLAlchemy job store in the same database, inside the
worker only (APScheduler 3 does not support one job store shared by several schedulers); its
job just requests a round. The schedule's spec is a loop setting any process may change
(`calibra round schedule`); the worker follows it within one poll.
"""
from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import UTC, timedelta

from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from apscheduler.schedulers.background import BackgroundScheduler
from sqlalchemy import Engine, select

from db.engine import Transactions, make_engine, session_factory, transaction
from db.models import RoundStatus, TrainingRound
from training.artifacts import ended, this_process
from training.rounds.config import LoopSettings, RoundOptions
from training.rounds.runner import run_round
from training.rounds.schedule import current_schedule, parse_schedule
from training.rounds.stages import TaskMaker
from training.rounds.store import OPEN, claim_next, heartbeat, recover_stale, request_round

log = logging.getLogger(__name__)
JOB_ID = "calibra-round"


def request_scheduled_round(database_url: str) -> None:
    """The schedule's job: request a round with the default options, unless one is requested or
    running already. A plain function with a plain argument, so the job store can keep it."""
    engine = make_engine(database_url)
    try:
        with transaction(session_factory(engine)) as db:
            if db.scalar(select(TrainingRound.id).where(TrainingRound.status.in_(OPEN))) is None:
                request_round(db, RoundOptions(), "schedule")
    finally:
        engine.dispose()


class Worker:
    def __init__(self, tx: Transactions, engine: Engine, settings: LoopSettings, make_tasks: TaskMaker, *,
                 default_schedule: str = "mon 02:00", poll_s: float = 2.0, heartbeat_s: float = 5.0,
                 stale_after_s: float = 60.0) -> None:
        self.tx, self.engine, self.settings, self.make_tasks = tx, engine, settings, make_tasks
        self.default_schedule, self.poll_s, self.heartbeat_s = default_schedule, poll_s, heartbeat_s
        self.stale_after = timedelta(seconds=stale_after_s)
        self.name = this_process()
        self.scheduler: BackgroundScheduler | None = None
        self._spec: str | None = None

    def recover(self) -> list[tuple[int, str]]:
        with self.tx() as db:  # a worker of this machine that ended (a crash) need not go stale first
            done = recover_stale(db, self.stale_after, ended)
        for number, what in done:
            log.warning("round %s: its worker stopped; %s", number, what)
        return done

    def start_scheduler(self) -> None:
        store = SQLAlchemyJobStore(engine=self.engine, tablename="apscheduler_jobs")
        self.scheduler = BackgroundScheduler(jobstores={"default": store}, timezone=UTC)
        self.scheduler.start()
        self.sync_schedule()

    def sync_schedule(self) -> None:
        """Make the scheduled job follow the schedule setting (or the default)."""
        if self.scheduler is None:
            return
        with self.tx() as db:
            spec = current_schedule(db, self.default_schedule)
        if spec == self._spec:
            return
        trigger = parse_schedule(spec)
        if trigger is None:
            if self.scheduler.get_job(JOB_ID) is not None:
                self.scheduler.remove_job(JOB_ID)
        else:
            self.scheduler.add_job(request_scheduled_round, trigger, id=JOB_ID, args=[self.engine.url.render_as_string(
                hide_password=False)], replace_existing=True, coalesce=True, misfire_grace_time=6 * 3600)
        self._spec = spec
        log.info("round schedule: %s", spec)

    def run_once(self) -> RoundStatus | None:
        """Claim one requested round and run it to its end; None when there was none to claim."""
        with self.tx() as db:
            round_id = claim_next(db, self.name)
        if round_id is None:
            return None
        cancel = threading.Event()
        done = threading.Event()

        def beat() -> None:
            while not done.wait(self.heartbeat_s):
                try:
                    with self.tx() as db:
                        if heartbeat(db, round_id, self.name):
                            cancel.set()
                except Exception:  # noqa: BLE001 - a missed beat is retried; the round goes on
                    log.exception("heartbeat failed")

        beater = threading.Thread(target=beat, name="round-heartbeat", daemon=True)
        beater.start()
        try:
            return run_round(self.tx, self.settings, self.make_tasks, round_id, cancel.is_set)
        finally:
            done.set()
            beater.join()

    def serve(self, stop: threading.Event, on_idle: Callable[[], None] = lambda: None) -> None:
        """Recover, follow the schedule and run rounds until `stop` is set."""
        self.recover()
        self.start_scheduler()
        try:
            while not stop.is_set():
                self.recover()
                self.sync_schedule()
                if self.run_once() is None:
                    on_idle()
                    stop.wait(self.poll_s)
        finally:
            if self.scheduler is not None:
                self.scheduler.shutdown(wait=False)
