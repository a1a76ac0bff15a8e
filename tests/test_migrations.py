"""The migrations build exactly the tables of `db/models.py`, so the two cannot drift apart."""
from __future__ import annotations

from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from db import Base, make_engine, upgrade


def _differences(url: str) -> list[object]:
    engine = make_engine(url)
    try:
        upgrade(engine)
        with engine.connect() as conn:
            context = MigrationContext.configure(conn, opts={"compare_type": True, "render_as_batch": True})
            return list(compare_metadata(context, Base.metadata))
    finally:
        engine.dispose()


def test_migrations_match_the_models_on_sqlite(tmp_path: Path) -> None:
    assert _differences(f"sqlite:///{tmp_path / 'm.db'}") == []


@pytest.mark.postgres
def test_migrations_match_the_models_on_postgresql(pg_database: str) -> None:
    assert _differences(pg_database) == []
