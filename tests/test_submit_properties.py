"""Whatever a client sends to submit or skip: a refusal that names the field and changes nothing,
or a judgement that is exactly what was sent. Generated with hypothesis, through the same
boundary checks (`annotate.submission_input`) and domain calls the page and the API use."""
from __future__ import annotations

import hashlib
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from sqlalchemy import Connection, select
from sqlalchemy.orm import Session, sessionmaker

from annotate import submission_input as checked
from annotate.errors import InvalidInput, NotFound
from annotate.queue import QueuePolicy, next_assignment
from annotate.submissions import Submission, SummaryRating, skip, submit
from db import Base, make_engine, session_factory, transaction, upgrade
from db.models import (
    Candidate,
    CandidateOrigin,
    ComparisonTask,
    Document,
    Judgement,
    Rater,
    Strength,
    TaskCandidate,
    digest,
)

FIELDS = {"assignment_id", "assignment", "best", "quality", "factual", "strength", "all_unacceptable", "comment",
          "reason", "ratings", *(f"{kind}_{c}" for kind in ("quality", "factual") for c in "ABCD")}
PAYLOADS = ["<script>alert(1)</script>", "'; DROP TABLE judgement; --", "\x00", "\u202e", "\ud800", "é" * 3000, ""]


def snapshot(conn: Connection) -> dict[str, tuple[int, str]]:
    """Each table's row count and a checksum of its rows, read in the caller's transaction."""
    tables = {}
    for table in Base.metadata.sorted_tables:
        rows = conn.execute(select(table).order_by(*table.primary_key.columns)).all()
        tables[table.name] = (len(rows), hashlib.sha256(repr(rows).encode()).hexdigest())
    return tables


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[sessionmaker[Session], dict[str, int]]]:
    """Rater `me` holds a lease on a three-summary task and has judged another; `other` holds one too."""
    engine = make_engine(f"sqlite:///{tmp_path_factory.mktemp('submit') / 'calibra.db'}")
    upgrade(engine)
    sessions = session_factory(engine)
    with transaction(sessions) as db:
        for i in range(3):
            doc = Document(source="p", text=f"post {i}", content_hash=digest(f"post {i}"))
            cands = [Candidate(document=doc, text=f"s{j}-{i}", text_hash=digest(f"s{j}-{i}"),
                               origin=CandidateOrigin.MODEL) for j in range(3)]
            db.add(ComparisonTask(document=doc, replication_target=3,
                                  slots=[TaskCandidate(candidate=c, slot=j) for j, c in enumerate(cands)]))
        me, other = Rater(name="me"), Rater(name="other")
        db.add_all([me, other])
        db.flush()
        policy = QueuePolicy(gold_rate=0)
        judged = next_assignment(db, me, policy)
        assert judged is not None
        submit(db, judged.id, me, Submission("A", {c: SummaryRating(4, True) for c in "ABC"}))
        mine, theirs = next_assignment(db, me, policy), next_assignment(db, other, policy)
        assert mine is not None and theirs is not None
        ids = {"mine": mine.id, "judged": judged.id, "theirs": theirs.id, "me": me.id}
    yield sessions, ids
    engine.dispose()


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats() | st.text(max_size=8)
    | st.sampled_from(PAYLOADS),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner, max_size=3),
    max_leaves=6)
letters = st.sampled_from(list("ABCD")) | st.sampled_from(["AB", "a", "E", " A", ""])


def per_letter(values: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.dictionaries(letters, values, max_size=5) | json_values


requests = st.fixed_dictionaries({
    "assignment_id": st.sampled_from(["mine", "judged", "theirs"]) | st.integers(-5, 10**6) | json_values,
    "best": letters | json_values,
    "quality": per_letter(st.integers(-1, 9) | json_values),
    "factual": per_letter(st.booleans() | json_values),
    "strength": st.sampled_from([None, *(s.value for s in Strength), "enormously"]) | json_values,
    "all_unacceptable": st.booleans() | json_values,
    "comment": st.none() | st.text(max_size=40) | st.sampled_from(PAYLOADS) | st.text(min_size=2001, max_size=2050)
    | json_values,
})


VALID = {"assignment_id": "mine", "best": "B", "quality": {c: 5 for c in "ABC"}, "factual": {c: True for c in "ABC"},
         "strength": "better", "all_unacceptable": False, "comment": "fine"}
# Most generated requests are wrong in many ways at once; these are right but for one field.
near_valid = st.sampled_from(sorted(VALID)).flatmap(
    lambda name: requests.map(lambda generated: {**VALID, name: generated[name]}))


def _resolve(value: Any, ids: dict[str, int]) -> Any:
    return ids[value] if isinstance(value, str) and value in ids else value


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(request=near_valid | requests)
def test_a_submit_is_refused_by_field_and_changes_nothing_or_stores_what_was_sent(world,  # type: ignore[no-untyped-def]
                                                                                  request: dict[str, Any]) -> None:
    sessions, ids = world
    assignment_id = _resolve(request["assignment_id"], ids)
    with sessions() as db, db.begin():  # rolled back at the end: every example starts from the same world
        conn = db.connection()
        before = snapshot(conn)
        try:
            sub = checked.submission(best=request["best"], quality_by_letter=request["quality"],
                                     factual_by_letter=request["factual"], strength=request["strength"],
                                     all_unacceptable=request["all_unacceptable"], comment=request["comment"])
            with db.begin_nested():
                judgement = db.get_one(Judgement, submit(db, checked.assignment_id(assignment_id),
                                                         db.get(Rater, ids["me"]), sub))
        except InvalidInput as refused:
            event(f"refused: {refused.field}")
            assert refused.field in FIELDS, refused
            assert snapshot(conn) == before
        except NotFound:
            event("not found")
            assert assignment_id not in (ids["mine"], ids["judged"])
            assert snapshot(conn) == before
        else:
            event("replayed" if assignment_id == ids["judged"] else "stored")
            if assignment_id == ids["judged"]:  # a replay returns what is stored and stores nothing
                assert snapshot(conn) == before
            else:
                _assert_stored_as_sent(db, judgement, sub, assignment_id)
        db.rollback()


def _assert_stored_as_sent(db: Session, judgement: Judgement, sub: Submission, assignment_id: int) -> None:
    assert judgement.assignment_id == assignment_id
    assert {type(r.quality) for r in judgement.ratings} == {int} and len(judgement.ratings) == 3
    assert all(1 <= r.quality <= 7 and isinstance(r.factual, bool) for r in judgement.ratings)
    shown = dict(zip("ABC", judgement.assignment.display_order, strict=True))
    assert sub.best is not None and judgement.best_candidate_id == shown[sub.best]
    assert judgement.comment == ((sub.comment or "").strip() or None)
    assert judgement.comment is None or len(judgement.comment) <= checked.COMMENT_MAX_CHARS


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(assignment=st.sampled_from(["mine", "judged", "theirs"]) | st.integers(-5, 10**6) | json_values,
       reason=st.sampled_from(["can't judge", "other"]) | st.text(max_size=300) | st.sampled_from(PAYLOADS)
       | json_values)
def test_a_skip_is_refused_by_field_and_changes_nothing_or_gives_the_task_back(world, assignment: Any,  # type: ignore[no-untyped-def]
                                                                               reason: Any) -> None:
    sessions, ids = world
    assignment_id = _resolve(assignment, ids)
    with sessions() as db, db.begin():
        conn = db.connection()
        before = snapshot(conn)
        try:
            with db.begin_nested():
                skipped = skip(db, checked.assignment_id(assignment_id), db.get(Rater, ids["me"]),
                               checked.skip_reason(reason))
        except InvalidInput as refused:
            assert refused.field in FIELDS, refused
            assert snapshot(conn) == before
        except NotFound:
            assert assignment_id not in (ids["mine"], ids["judged"])
            assert snapshot(conn) == before
        else:
            assert assignment_id == ids["mine"] and skipped.skip_reason == reason.strip()
        db.rollback()
