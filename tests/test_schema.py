"""The database rules that must hold whatever the caller does."""
from __future__ import annotations

import pytest
from sqlalchemy import inspect, text
from sqlalchemy.exc import IntegrityError

from db import (
    Assignment,
    Candidate,
    CandidateOrigin,
    CandidateRating,
    ComparisonTask,
    Document,
    Judgement,
    Rater,
    TaskCandidate,
    make_engine,
    session_factory,
    transaction,
    upgrade,
)
from db.migrate import downgrade
from db.models import digest


@pytest.fixture
def sessions(tmp_path):  # type: ignore[no-untyped-def]
    engine = make_engine(f"sqlite:///{tmp_path / 'schema.db'}")
    upgrade(engine)
    yield session_factory(engine)
    engine.dispose()


def _task_with_rater(db) -> tuple[ComparisonTask, Rater, list[Candidate]]:  # type: ignore[no-untyped-def]
    doc = Document(source="t", text="a post", content_hash=digest("a post"))
    cands = [Candidate(document=doc, text=t, text_hash=digest(t), origin=CandidateOrigin.IMPORTED)
             for t in ("one", "two")]
    task = ComparisonTask(document=doc, slots=[TaskCandidate(candidate=c, slot=i) for i, c in enumerate(cands)])
    rater = Rater(name="ann")
    db.add_all([doc, task, rater])
    db.flush()
    return task, rater, cands


def test_sqlite_pragmas_are_on(sessions) -> None:  # type: ignore[no-untyped-def]
    with transaction(sessions) as db:
        assert db.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        assert db.execute(text("PRAGMA foreign_keys")).scalar() == 1
        assert db.execute(text("PRAGMA busy_timeout")).scalar() >= 5000


def test_foreign_keys_are_enforced(sessions) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(IntegrityError):
        with transaction(sessions) as db:
            db.add(Candidate(document_id=999, text="x", text_hash=digest("x"), origin=CandidateOrigin.MODEL))


def test_one_judgement_per_assignment_and_per_rater(sessions) -> None:  # type: ignore[no-untyped-def]
    with transaction(sessions) as db:
        task, rater, cands = _task_with_rater(db)
        assignment = Assignment(task=task, rater=rater, display_order=[c.id for c in cands])
        db.add(assignment)
        db.flush()
        db.add(Judgement(assignment=assignment, task=task, rater=rater, best_candidate=cands[0]))
        ids = (task.id, rater.id, assignment.id, cands[1].id)
    with pytest.raises(IntegrityError):  # the same assignment submitted twice
        with transaction(sessions) as db:
            db.add(Judgement(assignment_id=ids[2], task_id=ids[0], rater_id=ids[1], best_candidate_id=ids[3]))
    with pytest.raises(IntegrityError):  # the same rater assigned the same task twice
        with transaction(sessions) as db:
            db.add(Assignment(task_id=ids[0], rater_id=ids[1], display_order=[]))
    with transaction(sessions) as db:
        assert db.query(Judgement).count() == 1 and db.query(Assignment).count() == 1


@pytest.mark.parametrize("quality", [0, 8])
def test_quality_outside_1_to_7_is_refused(sessions, quality: int) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(IntegrityError):
        with transaction(sessions) as db:
            task, rater, cands = _task_with_rater(db)
            a = Assignment(task=task, rater=rater, display_order=[])
            j = Judgement(assignment=a, task=task, rater=rater, best_candidate=cands[0])
            db.add(CandidateRating(judgement=j, candidate_id=cands[0].id, quality=quality))


@pytest.mark.parametrize("slot", [4, 0])  # past the fourth place; a place already taken
def test_task_slots_are_unique_and_at_most_four(sessions, slot: int) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(IntegrityError):
        with transaction(sessions) as db:
            task, _, _ = _task_with_rater(db)
            extra = Candidate(document=task.document, text="three", text_hash=digest("three"),
                              origin=CandidateOrigin.MODEL)
            db.add(TaskCandidate(task=task, candidate=extra, slot=slot))


def test_same_text_twice_is_one_document_and_one_candidate(sessions) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(IntegrityError):
        with transaction(sessions) as db:
            db.add_all([Document(source="a", text="same", content_hash=digest("same")),
                        Document(source="b", text="same ", content_hash=digest("same "))])
    with pytest.raises(IntegrityError):
        with transaction(sessions) as db:
            doc = Document(source="a", text="d", content_hash=digest("d"))
            db.add_all([Candidate(document=doc, text=t, text_hash=digest(t), origin=CandidateOrigin.MODEL)
                        for t in ("s", " s")])


def test_migrations_go_down_and_up_again(tmp_path) -> None:  # type: ignore[no-untyped-def]
    engine = make_engine(f"sqlite:///{tmp_path / 'm.db'}")
    upgrade(engine)
    assert "judgement" in inspect(engine).get_table_names()
    downgrade(engine, "base")
    assert set(inspect(engine).get_table_names()) <= {"alembic_version"}
    upgrade(engine)
    with engine.connect() as conn:
        assert conn.execute(text("SELECT version_num FROM alembic_version")).scalar() == "0007"
