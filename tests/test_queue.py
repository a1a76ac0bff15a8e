"""The task queue and submissions, without the web layer, on SQLite and PostgreSQL."""
from __future__ import annotations

import random
import threading
from collections import Counter
from datetime import timedelta

import pytest
from sqlalchemy import func, select

from annotate.errors import InvalidInput
from annotate.queue import QueuePolicy, next_assignment, queue_size
from annotate.sessions import check_password
from annotate.submissions import Submission, SummaryRating, skip, submit
from annotate.users import add_user
from db import (
    Assignment,
    Candidate,
    CandidateOrigin,
    ComparisonTask,
    Document,
    Judgement,
    Rater,
    Role,
    TaskCandidate,
    make_engine,
    session_factory,
    transaction,
    upgrade,
)
from db.models import digest, utcnow

POLICY = QueuePolicy(lease=timedelta(minutes=15), gold_rate=0.0)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def sessions(request, tmp_path):  # type: ignore[no-untyped-def]
    url = (f"sqlite:///{tmp_path / 'q.db'}" if request.param == "sqlite"
           else request.getfixturevalue("pg_database"))
    engine = make_engine(url)
    upgrade(engine)
    yield session_factory(engine)
    engine.dispose()


def make_tasks(sessions, n: int, k: int = 3, target: int = 3, priority: int = 0) -> list[int]:  # type: ignore[no-untyped-def]
    with transaction(sessions) as db:
        ids = []
        for i in range(n):
            text = f"post {priority}-{i}-{random.random()}"
            doc = Document(source="t", text=text, content_hash=digest(text))
            cands = [Candidate(document=doc, text=f"s{j} {text}", text_hash=digest(f"s{j} {text}"),
                               origin=CandidateOrigin.MODEL) for j in range(k)]
            task = ComparisonTask(document=doc, replication_target=target, priority=priority,
                                  slots=[TaskCandidate(candidate=c, slot=j) for j, c in enumerate(cands)])
            db.add(task)
            db.flush()
            ids.append(task.id)
        return ids


def make_raters(sessions, n: int) -> list[int]:  # type: ignore[no-untyped-def]
    with transaction(sessions) as db:
        raters = [Rater(name=f"r{i}-{random.random()}") for i in range(n)]
        db.add_all(raters)
        db.flush()
        return [r.id for r in raters]


def full(k: int = 3, best: str = "A") -> Submission:
    return Submission(best=best, ratings={c: SummaryRating(5, True) for c in "ABCD"[:k]}, strength="better")


def lease(sessions, rater_id: int, **kw):  # type: ignore[no-untyped-def]
    with transaction(sessions) as db:
        a = next_assignment(db, db.get(Rater, rater_id), POLICY, **kw)
        return None if a is None else (a.id, a.task_id, list(a.display_order))


def do_submit(sessions, rater_id: int, assignment_id: int, sub: Submission, **kw):  # type: ignore[no-untyped-def]
    with transaction(sessions) as db:
        return submit(db, assignment_id, db.get(Rater, rater_id), sub, **kw)


def test_breadth_first_and_priority(sessions) -> None:  # type: ignore[no-untyped-def]
    low = make_tasks(sessions, 2)
    high = make_tasks(sessions, 1, priority=5)
    r = make_raters(sessions, 3)
    assert lease(sessions, r[0])[1] == high[0]
    assert lease(sessions, r[0])[1] == high[0]  # the live lease is handed back, not a second task
    assert lease(sessions, r[1])[1] == high[0]
    a, task, _ = lease(sessions, r[2])
    assert task == high[0]
    do_submit(sessions, r[2], a, full())
    # the high-priority task has one judgement and two leases; r2 gets the least-judged low task
    assert lease(sessions, r[2])[1] == low[0]


def test_each_rater_gets_an_own_shuffled_order_stored_with_the_lease(sessions) -> None:  # type: ignore[no-untyped-def]
    (task,) = make_tasks(sessions, 1, k=4, target=20)
    raters = make_raters(sessions, 12)
    orders = {tuple(lease(sessions, r)[2]) for r in raters}
    assert len(orders) > 1
    with transaction(sessions) as db:
        assert all(sorted(o) == sorted(db.get(ComparisonTask, task).candidate_ids) for o in orders)


def test_replication_target_and_no_rater_twice(sessions) -> None:  # type: ignore[no-untyped-def]
    (task,) = make_tasks(sessions, 1, target=3)
    raters = make_raters(sessions, 4)
    for r in raters[:3]:
        a, t, _ = lease(sessions, r)
        assert t == task
        do_submit(sessions, r, a, full())
        assert lease(sessions, r) is None  # never the same task twice
    assert lease(sessions, raters[3]) is None  # the task has its three judgements
    with transaction(sessions) as db:
        assert db.get(ComparisonTask, task).judgement_count == 3
        assert queue_size(db, db.get(Rater, raters[3])) == 0


def test_expired_leases_return_the_task(sessions) -> None:  # type: ignore[no-untyped-def]
    (task,) = make_tasks(sessions, 1, target=1)
    r = make_raters(sessions, 2)
    a, _, _ = lease(sessions, r[0])
    assert lease(sessions, r[1]) is None  # held by r0
    later = utcnow() + timedelta(minutes=16)
    b, t, _ = lease(sessions, r[1], now=later)
    assert t == task
    with pytest.raises(InvalidInput, match="expired"):
        do_submit(sessions, r[0], a, full(), now=later)
    do_submit(sessions, r[1], b, full(), now=later)
    with transaction(sessions) as db:
        assert db.scalar(select(func.count()).select_from(Judgement)) == 1


def test_skipped_tasks_go_to_someone_else(sessions) -> None:  # type: ignore[no-untyped-def]
    (task,) = make_tasks(sessions, 1, target=1)
    r = make_raters(sessions, 2)
    a, _, _ = lease(sessions, r[0])
    with transaction(sessions) as db:
        with pytest.raises(InvalidInput, match="reason"):
            skip(db, a, db.get(Rater, r[0]), " ")
        skip(db, a, db.get(Rater, r[0]), "can't judge")
    assert lease(sessions, r[0]) is None
    assert lease(sessions, r[1])[1] == task


@pytest.mark.parametrize(("sub", "field"), [
    (Submission(best=None, ratings={c: SummaryRating(5, True) for c in "ABC"}), "best"),
    (Submission(best="D", ratings={c: SummaryRating(5, True) for c in "ABC"}), "best"),
    (Submission(best="A", ratings={c: SummaryRating(5, True) for c in "AB"}), "quality_C"),
    (Submission(best="A", ratings={"A": SummaryRating(8, True), "B": SummaryRating(5, True),
                                   "C": SummaryRating(5, True)}), "quality_A"),
    (Submission(best="A", ratings={"A": SummaryRating(5, None), "B": SummaryRating(5, True),
                                   "C": SummaryRating(5, True)}), "factual_A"),
    (Submission(best="A", ratings={c: SummaryRating(5, True) for c in "ABC"}, strength="hugely"), "strength"),
])
def test_invalid_submissions_name_the_field_and_store_nothing(sessions, sub: Submission, field: str) -> None:  # type: ignore[no-untyped-def]
    make_tasks(sessions, 1)
    (r,) = make_raters(sessions, 1)
    a, _, _ = lease(sessions, r)
    with pytest.raises(InvalidInput) as err:
        do_submit(sessions, r, a, sub)
    assert err.value.field == field
    with transaction(sessions) as db:
        assert db.scalar(select(func.count()).select_from(Judgement)) == 0


def test_resubmitting_stores_one_judgement(sessions) -> None:  # type: ignore[no-untyped-def]
    (task,) = make_tasks(sessions, 1)
    (r,) = make_raters(sessions, 1)
    a, _, order = lease(sessions, r)
    first = do_submit(sessions, r, a, full(best="B"))
    assert do_submit(sessions, r, a, full(best="B")) == first
    with transaction(sessions) as db:
        j = db.get(Judgement, first)
        assert j.best_candidate_id == order[1]  # letters map through the rater's own order
        assert {x.candidate_id for x in j.ratings} == set(order) and j.strength.value == "better"
        assert db.get(ComparisonTask, task).judgement_count == 1


def test_gold_tasks_are_served_at_their_rate(sessions) -> None:  # type: ignore[no-untyped-def]
    make_tasks(sessions, 5, target=50)
    gold = make_tasks(sessions, 5, target=50)
    with transaction(sessions) as db:
        for t in gold:
            task = db.get(ComparisonTask, t)
            task.gold_candidate_id = task.candidate_ids[0]
    raters = make_raters(sessions, 40)
    served = Counter()
    for i, r in enumerate(raters):
        with transaction(sessions) as db:
            a = next_assignment(db, db.get(Rater, r), QueuePolicy(gold_rate=0.25), rng=random.Random(i))
            served[a.task_id in gold] += 1
    assert 4 <= served[True] <= 18  # about a quarter of 40


def test_concurrent_requests_never_overshoot_and_double_submits_store_one(sessions) -> None:  # type: ignore[no-untyped-def]
    make_tasks(sessions, 6, target=3)
    raters = make_raters(sessions, 16)
    errors: list[BaseException] = []

    def work(rater_id: int) -> None:
        try:
            for _ in range(3):
                got = lease(sessions, rater_id)
                if got is None:
                    return
                a = got[0]
                # a double click: the same submit twice from two threads at once
                pair = [threading.Thread(target=do_submit, args=(sessions, rater_id, a, full())) for _ in range(2)]
                [t.start() for t in pair]
                [t.join() for t in pair]
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(r,)) for r in raters]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert not errors
    with transaction(sessions) as db:
        per_task = Counter(db.scalars(select(Judgement.task_id)))
        assert per_task and max(per_task.values()) <= 3
        assert sum(per_task.values()) == 18  # 6 tasks x 3, all filled
        for task in db.scalars(select(ComparisonTask)):
            assert task.judgement_count == per_task[task.id]
        assert db.scalar(select(func.count()).select_from(Judgement)) == db.scalar(
            select(func.count()).select_from(Assignment).where(Assignment.status == "submitted"))


def test_users_log_in_with_hashed_passwords(sessions) -> None:  # type: ignore[no-untyped-def]
    with transaction(sessions) as db:
        rater = add_user(db, "alice", Role.ADMIN, "correct horse")
        assert rater.password_hash and "correct horse" not in rater.password_hash
        with pytest.raises(InvalidInput, match="already exists"):
            add_user(db, "alice", Role.ANNOTATOR, "another one")
        with pytest.raises(InvalidInput, match="8 characters"):
            add_user(db, "bob", Role.ANNOTATOR, "short")
        with pytest.raises(InvalidInput, match="72 bytes"):
            add_user(db, "bob", Role.ANNOTATOR, "é" * 40)
        assert check_password(rater.password_hash, "correct horse")
        assert not check_password(rater.password_hash, "wrong horse")
        assert not check_password(None, "")  # imported raters have no password and cannot log in


def test_users_add_command(env, monkeypatch: pytest.MonkeyPatch, ctx) -> None:  # type: ignore[no-untyped-def]
    from typer.testing import CliRunner

    from app.cli import cli

    runner = CliRunner()
    monkeypatch.setenv("PW", "s3cret-pass")
    assert runner.invoke(cli, ["users", "add", "carol", "--role", "admin", "--password-env", "PW"]).exit_code == 0
    again = runner.invoke(cli, ["users", "add", "carol", "--password-env", "PW"])
    assert again.exit_code == 2 and "already exists" in again.output
    assert runner.invoke(cli, ["users", "add", "dan", "--role", "boss", "--password-env", "PW"]).exit_code == 2
    prompted = runner.invoke(cli, ["users", "add", "erin"], input="another-pass\nanother-pass\n")
    assert prompted.exit_code == 0, prompted.output
    with ctx.transaction() as db:
        carol, erin = (db.scalar(select(Rater).where(Rater.name == n)) for n in ("carol", "erin"))
        assert carol.role == Role.ADMIN and check_password(carol.password_hash, "s3cret-pass")
        assert erin.role == Role.ANNOTATOR and check_password(erin.password_hash, "another-pass")


def test_gold_accuracy_is_recorded_per_rater(sessions) -> None:  # type: ignore[no-untyped-def]
    from annotate.gold import gold_scores, mark_gold

    gold = make_tasks(sessions, 2, target=5)
    raters = make_raters(sessions, 2)
    with transaction(sessions) as db:
        with pytest.raises(InvalidInput, match="not in task"):
            mark_gold(db, gold[0], 10_000)
        for t in gold:
            mark_gold(db, t, db.get(ComparisonTask, t).candidate_ids[1])
    for r, right in zip(raters, (True, False), strict=True):
        for _ in gold:
            a, task_id, order = lease(sessions, r)
            with transaction(sessions) as db:
                target = db.get(ComparisonTask, task_id).gold_candidate_id
            letter = "ABC"[order.index(target)] if right else "ABC"[(order.index(target) + 1) % 3]
            do_submit(sessions, r, a, full(best=letter))
    with transaction(sessions) as db:
        names = {r.id: r.name for r in db.scalars(select(Rater))}
        scores = {g.rater: (g.judged, g.correct, g.accuracy) for g in gold_scores(db)}
    assert scores == {names[raters[0]]: (2, 2, 1.0), names[raters[1]]: (2, 0, 0.0)}


def test_gold_and_users_commands(env, monkeypatch: pytest.MonkeyPatch, ctx) -> None:  # type: ignore[no-untyped-def]
    import json

    from typer.testing import CliRunner

    from app.cli import cli

    (task,) = make_tasks(ctx.sessions, 1)
    with ctx.transaction() as db:
        cand = db.get(ComparisonTask, task).candidate_ids[2]
        add_user(db, "gina", Role.ANNOTATOR, "gold-digger")
    runner = CliRunner()
    assert runner.invoke(cli, ["tasks", "gold", str(task), "--candidate", str(cand)]).exit_code == 0
    bad = runner.invoke(cli, ["tasks", "gold", str(task), "--candidate", "99999"])
    assert bad.exit_code == 2 and "is not in task" in bad.output
    with ctx.transaction() as db:
        assert db.get(ComparisonTask, task).gold_candidate_id == cand
    listed = json.loads(runner.invoke(cli, ["users", "list", "--json"]).stdout)
    assert listed == [{"name": "gina", "role": "annotator", "active": True, "gold_judged": 0, "gold_accuracy": None}]


def test_a_submit_racing_its_lease_expiry_never_pushes_a_task_past_its_target(sessions) -> None:  # type: ignore[no-untyped-def]
    """Rater A's lease expires as rater B is given the task in an open transaction; A's submit,
    stamped before the expiry, arrives meanwhile. It waits for the task row, and the target holds
    whichever way the race goes."""
    (task,) = make_tasks(sessions, 1, target=1)
    a_id, b_id = make_raters(sessions, 2)
    start = utcnow()
    a_assignment = lease(sessions, a_id, now=start)[0]
    expiry = start + POLICY.lease
    b_lease_open, a_done = threading.Event(), threading.Event()
    outcome: dict[str, object] = {}

    def a_submits() -> None:
        b_lease_open.wait()
        try:
            outcome["a"] = do_submit(sessions, a_id, a_assignment, full(), now=expiry - timedelta(seconds=1))
        except InvalidInput as exc:
            outcome["a"] = exc
        a_done.set()

    thread = threading.Thread(target=a_submits)
    thread.start()
    with transaction(sessions) as db:  # B's lease, held open while A's submit arrives
        b_assignment = next_assignment(db, db.get(Rater, b_id), POLICY, now=expiry + timedelta(seconds=1))
        assert b_assignment is not None and b_assignment.task_id == task
        b_lease_open.set()
        assert not a_done.wait(1.0), "the submit went ahead without waiting for the task row"
    thread.join(timeout=30)
    b_assignment_id = b_assignment.id
    with pytest.raises(InvalidInput, match="already has all its judgements"):
        do_submit(sessions, b_id, b_assignment_id, full(), now=expiry + timedelta(seconds=2))
    with transaction(sessions) as db:
        assert db.scalar(select(func.count()).select_from(Judgement).where(Judgement.task_id == task)) == 1
        assert db.get(ComparisonTask, task).judgement_count == 1


def test_a_burst_of_raters_all_get_tasks_while_tasks_are_open(sessions) -> None:  # type: ignore[no-untyped-def]
    """More raters ask at once than one queue window holds: each still gets an open task, even
    when the tasks of the window it read first were all taken while it waited for their locks."""
    from annotate.queue import CANDIDATE_WINDOW

    n = CANDIDATE_WINDOW + 16
    make_tasks(sessions, n, target=1)
    raters = make_raters(sessions, n)
    start = threading.Barrier(n)
    got: dict[int, int | None] = {}

    def ask(rater_id: int) -> None:
        start.wait()
        leased = lease(sessions, rater_id)
        got[rater_id] = None if leased is None else leased[1]

    threads = [threading.Thread(target=ask, args=(r,)) for r in raters]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert sorted(r for r, task in got.items() if task is None) == []  # nobody told "no task"
    assert len(set(got.values())) == n  # one rater per task: the target of 1 held
