"""Durability of the data: synced commits, long reads that never hold up writers, exports
written whole or not at all, and backups that restore every row, on SQLite and PostgreSQL."""
from __future__ import annotations

import resource
import sqlite3
import subprocess
import sys
import threading
import time
from contextlib import closing
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from sqlalchemy import delete, func, select, update
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session
from typer.testing import CliRunner

from annotate.export import write_table
from app.cli import cli
from app.config import Settings, load_settings
from app.context import Context
from db import (
    Base,
    Candidate,
    ComparisonTask,
    Document,
    Judgement,
    LoopSetting,
    ModelVersion,
    Rater,
    RegistryEvent,
    RoundStage,
    TrainingRound,
    make_engine,
)
from db.models import CandidateScore, DisagreementReview
from tests.conftest import ROOT

runner = CliRunner()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def settings(request: pytest.FixtureRequest, env: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """This module's `ctx`, `judged` and CLI commands run on SQLite and on PostgreSQL."""
    if request.param == "postgres":
        monkeypatch.setenv("CALIBRA_DATABASE_URL", request.getfixturevalue("pg_database"))
    return load_settings()


def raters(db: Session) -> int:
    return db.scalar(select(func.count()).select_from(Rater)) or 0


def test_sqlite_commits_are_synced_to_disk(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'calibra.db'}")
    with engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 2  # FULL
    engine.dispose()


def test_a_long_read_keeps_its_snapshot_and_never_holds_up_a_writer(ctx: Context) -> None:
    def add_rater() -> None:
        with ctx.transaction() as db:
            db.add(Rater(name="arrives during the export"))

    with ctx.reading() as reader:
        before = raters(reader)
        writer = threading.Thread(target=add_rater)
        writer.start()
        writer.join(timeout=10)  # well under the 30 s busy timeout
        assert not writer.is_alive(), "the writer waited for the reader"
        assert raters(reader) == before
    with ctx.reading() as db:
        assert raters(db) == before + 1


def test_a_write_in_a_read_fails_and_the_connection_writes_again_afterwards(ctx: Context) -> None:
    with pytest.raises(DBAPIError, match="read-?only"), ctx.reading() as db:
        db.add(Rater(name="written by mistake"))
        db.flush()
    with ctx.transaction() as db:
        db.add(Rater(name="written on purpose"))
    with ctx.reading() as db:
        names = set(db.scalars(select(Rater.name)))
    assert "written on purpose" in names and "written by mistake" not in names


# --- exports ------------------------------------------------------------------------------------

WRITE_UNDER_A_FILE_SIZE_LIMIT = """
import secrets, sys
from pathlib import Path
import pandas as pd
from annotate.export import write_table
write_table(pd.DataFrame({"text": [secrets.token_hex(500) for _ in range(1000)]}), Path(sys.argv[1]), sys.argv[2])
"""


def read_table(path: Path, fmt: str) -> pd.DataFrame:
    if fmt == "jsonl":
        return pd.read_json(path, lines=True)
    if fmt == "parquet":
        return pd.read_parquet(path)
    import datasets

    return datasets.load_from_disk(str(path)).to_pandas()


@pytest.mark.parametrize("fmt", ["jsonl", "parquet", "hf-dataset"])
def test_an_export_that_fails_half_way_leaves_the_previous_one(tmp_path: Path, fmt: str) -> None:
    out = tmp_path / "exports" / f"judgements.{fmt}"
    previous = pd.DataFrame({"text": ["the previous export"]})
    write_table(pd.DataFrame({"text": ["an older export", "with two rows"]}), out, fmt)
    write_table(previous, out, fmt)  # an export replaces the one before

    def limit_file_size() -> None:
        # Like a full disk: writes stop at 100 kB with EFBIG (Python ignores SIGXFSZ), a tenth of the export.
        resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, 100_000))

    done = subprocess.run([sys.executable, "-c", WRITE_UNDER_A_FILE_SIZE_LIMIT, str(out), fmt], cwd=ROOT,
                          capture_output=True, text=True, preexec_fn=limit_file_size)
    assert done.returncode != 0 and "File too large" in done.stderr
    assert read_table(out, fmt).equals(previous)
    assert [p.name for p in out.parent.iterdir()] == [out.name]  # no temporary left behind


# --- backups ------------------------------------------------------------------------------------

def add_the_other_tables(ctx: Context) -> None:
    """Rows in the tables `judged` leaves empty: a round with a stage, a loop setting, a promotion,
    a judge's score and a disagreement to review."""
    with ctx.transaction() as db:
        alpha, beta = (db.scalars(select(ModelVersion).where(ModelVersion.name == n)).one() for n in ("alpha", "beta"))
        task = db.scalars(select(ComparisonTask).order_by(ComparisonTask.id)).first()
        assert task is not None
        first, second = task.candidate_ids[:2]
        db.add_all([
            TrainingRound(number=1, options={"docs": 12, "judge": "reward"}, requested_by="admin",
                          stages=[RoundStage(name="snapshot", metrics={"judgements": 36}, log="took a snapshot")]),
            LoopSetting(key="round_schedule", value="daily 03:00", updated_by="admin"),
            RegistryEvent(action="promote", model_version_id=alpha.id, previous_id=beta.id, actor="round 1"),
            CandidateScore(candidate_id=first, model_version_id=alpha.id, score=0.123456789012345, rank=1),
            DisagreementReview(task_id=task.id, round=1, judge="alpha", human_choice_id=first,
                               judge_choice_id=second, confidence=0.91, votes={str(first): 2},
                               scores={str(second): 0.91}, raters=["r1", "r2"]),
        ])


def every_row(ctx: Context) -> dict[str, list[tuple[Any, ...]]]:
    with ctx.reading() as db:
        return {t.name: [tuple(r) for r in db.execute(select(t).order_by(*t.primary_key.columns))]
                for t in Base.metadata.sorted_tables}


def change_everything(ctx: Context) -> None:
    """What happens after a backup: judgements deleted, a rater added, texts edited, a setting gone."""
    with ctx.transaction() as db:
        db.execute(delete(Judgement).where(Judgement.rater_id == select(Rater.id).where(Rater.name == "r3")
                                           .scalar_subquery()))
        db.add(Rater(name="joined after the backup"))
        db.execute(update(Document).values(text="edited after the backup"))
        db.execute(update(Candidate).values(meta={"edited": True}))
        db.execute(delete(LoopSetting))


@pytest.fixture
def everything(judged: Context) -> Context:
    add_the_other_tables(judged)
    return judged


def test_a_backup_restores_every_row(everything: Context, env: Path) -> None:
    ctx = everything
    at_backup = every_row(ctx)
    for table in ("judgement", "candidate_rating", "training_round", "round_stage", "loop_setting",
                  "registry_event", "candidate_score", "disagreement_review"):
        assert at_backup[table], f"{table} has no rows to back up"
    path = env / "backups" / "calibra.backup"

    made = runner.invoke(cli, ["db", "backup", str(path)])
    assert made.exit_code == 0, made.output
    assert made.output.strip().endswith(f"to {path}")
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # one self-contained file

    change_everything(ctx)
    changed = every_row(ctx)
    assert changed != at_backup
    assert len(changed["candidate_rating"]) < len(at_backup["candidate_rating"])  # deleted with their judgements

    restored = runner.invoke(cli, ["db", "restore", str(path), "--yes"])
    assert restored.exit_code == 0, restored.output
    assert restored.output.strip().endswith(f"from {path}")
    # The app's open connections see the restored database.
    assert every_row(ctx) == at_backup


def test_a_restore_asks_first(judged: Context, env: Path) -> None:
    path = env / "calibra.backup"
    assert runner.invoke(cli, ["db", "backup", str(path)]).exit_code == 0
    with judged.transaction() as db:
        db.add(Rater(name="kept"))
    refused = runner.invoke(cli, ["db", "restore", str(path)], input="n\n")
    assert refused.exit_code == 1 and "replace everything in" in refused.output
    with judged.reading() as db:
        assert db.scalar(select(Rater).where(Rater.name == "kept")) is not None


def not_backups(folder: Path) -> list[Path]:
    text = folder / "notes.txt"
    text.write_text("judgements, to be typed in later\n")
    foreign = folder / "other.db"
    with sqlite3.connect(foreign) as conn:
        conn.execute("CREATE TABLE judgement (id INTEGER PRIMARY KEY)")
    return [text, foreign, folder / "missing.backup"]


def test_a_file_that_is_not_a_backup_is_refused_and_nothing_changes(judged: Context, env: Path) -> None:
    text = env / "notes.txt"
    text.write_text("judgements, to be typed in later\n")
    foreign = env / "other.db"
    with closing(sqlite3.connect(foreign)) as conn:
        conn.execute("CREATE TABLE judgement (id INTEGER PRIMARY KEY)")
    missing = env / "missing.backup"
    expected = {"sqlite": {text: f"{text} is not a SQLite database",
                           foreign: f"{foreign} is not a Calibra database (it has no alembic_version table)"},
                "postgresql": {path: f"{path} is not a pg_dump archive" for path in (text, foreign)},
                }[judged.engine.dialect.name] | {missing: f"{missing}: no such file"}
    before = every_row(judged)
    for path, problem in expected.items():
        result = runner.invoke(cli, ["db", "restore", str(path), "--yes"])
        assert result.exit_code == 2 and result.output.startswith(f"error: {problem}"), result.output
        assert every_row(judged) == before


HOLD_WRITE_LOCK = """
import sys, time
from db import make_engine
engine = make_engine(sys.argv[1])
with engine.begin() as conn:
    print("holding", flush=True)
    time.sleep(float(sys.argv[2]))
"""


@pytest.mark.sqlite
def test_writers_in_other_processes_take_turns_and_give_up_at_the_busy_timeout(tmp_path: Path) -> None:
    """Another process's write transaction holds ours up until it commits, no longer; beyond the
    busy timeout ours fails as busy (try again), with nothing written."""
    from db.errors import is_busy

    url = f"sqlite:///{tmp_path / 'calibra.db'}"
    make_engine(url).dispose()

    def hold(seconds: float) -> subprocess.Popen[str]:
        child = subprocess.Popen([sys.executable, "-c", HOLD_WRITE_LOCK, url, str(seconds)], cwd=ROOT,
                                 stdout=subprocess.PIPE, text=True)
        assert child.stdout is not None and child.stdout.readline().strip() == "holding"
        return child

    def write(engine: Any) -> float:
        started = time.monotonic()
        with engine.begin() as conn:
            conn.exec_driver_sql("CREATE TABLE IF NOT EXISTS t (x)")
            conn.exec_driver_sql("INSERT INTO t VALUES (1)")
        return time.monotonic() - started

    impatient = make_engine(url, busy_timeout_s=0.3)
    child = hold(2.0)
    with pytest.raises(DBAPIError) as refused:
        write(impatient)
    assert is_busy(refused.value)
    child.wait(timeout=30)
    patient = make_engine(url)
    child = hold(0.5)
    waited = write(patient)
    child.wait(timeout=30)
    assert 0.2 < waited < 1.5  # held up by the other writer, and free as soon as it committed
    with patient.connect() as conn:
        assert conn.exec_driver_sql("SELECT count(*) FROM t").scalar() == 1
