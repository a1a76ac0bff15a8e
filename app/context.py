"""What every command and the web app start from: settings, an upgraded database, sessions."""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from app.config import Settings, load_settings
from db import make_engine, read_transaction, session_factory, transaction, upgrade
from training.registry import register_defaults
from training.rounds.config import LoopSettings


@dataclass
class Context:
    settings: Settings
    engine: Engine
    sessions: sessionmaker[Session]

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        with transaction(self.sessions) as db:
            yield db

    @contextmanager
    def reading(self) -> Iterator[Session]:
        """A read-only snapshot for long reads (exports, reports): annotators' submits go on
        meanwhile instead of waiting for it, and a write in it fails."""
        with read_transaction(self.sessions) as db:
            yield db

    def loop_settings(self) -> LoopSettings:
        s = self.settings
        return LoopSettings(home=s.home, models_dir=s.models_dir, min_judgements=s.round_min_judgements,
                            ranker=s.round_ranker, batch_docs=s.round_batch_docs, replication=s.replication,
                            promote_min_win_rate=s.promote_min_win_rate,
                            promote_max_length_growth=s.promote_max_length_growth,
                            hacking_alarm_gap=s.hacking_alarm_gap, next_batch_selection=s.next_batch_selection)


def open_context(settings: Settings | None = None) -> Context:
    """Upgrade the database to the newest schema and register the default models once."""
    settings = settings or load_settings()
    engine = make_engine(settings.database_url, busy_timeout_s=settings.busy_timeout_s)
    upgrade(engine)
    ctx = Context(settings, engine, session_factory(engine))
    with ctx.transaction() as db:
        register_defaults(db, settings.models_dir)
    return ctx
