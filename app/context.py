"""What every command and the web app start from: settings, an upgraded database, sessions."""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from app.config import Settings, load_settings
from db import make_engine, session_factory, transaction, upgrade
from training.registry import register_defaults


@dataclass
class Context:
    settings: Settings
    engine: Engine
    sessions: sessionmaker[Session]

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        with transaction(self.sessions) as db:
            yield db


def open_context(settings: Settings | None = None) -> Context:
    """Upgrade the database to the newest schema and register the default models once."""
    settings = settings or load_settings()
    engine = make_engine(settings.database_url)
    upgrade(engine)
    ctx = Context(settings, engine, session_factory(engine))
    with ctx.transaction() as db:
        register_defaults(db, settings.models_dir)
    return ctx
