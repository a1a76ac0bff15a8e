"""The app killed mid-flight: every judgement it acknowledged is stored exactly once."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select

from annotate.queue import open_tasks_query
from annotate.users import add_user
from bench.annotate_load import PASSWORD, rater_names, seed  # the load benchmark's tasks and accounts
from db.local_postgres import free_port
from db.models import (
    Assignment,
    AssignmentStatus,
    ComparisonTask,
    Judgement,
    Rater,
    Role,
    utcnow,
)

ANNOTATORS = 20
LEASE_MINUTES = 0.05  # three seconds, so the leases the killed app held come back within the test


def _serve(port: int) -> subprocess.Popen[str]:
    app = subprocess.Popen([sys.executable, "-m", "app.cli", "serve", "--no-worker", "--port", str(port)],
                           env={**os.environ, "CALIBRA_LEASE_MINUTES": str(LEASE_MINUTES)},
                           stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    assert app.stdout is not None and "Calibra is running" in app.stdout.readline()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            httpx.get(f"http://127.0.0.1:{port}/login", timeout=2).raise_for_status()
            return app
        except httpx.HTTPError:
            time.sleep(0.1)
    raise AssertionError("the app did not start")


def _annotate(url: str, name: str, acknowledged: list[int], cookies: dict[str, str], ready: threading.Barrier) -> None:
    """Judge until the app goes away; record every submit the app answered with stored: true."""
    with httpx.Client(base_url=url, timeout=30) as client:
        client.post("/login", data={"username": name, "password": PASSWORD}).raise_for_status()
        cookies.update(client.cookies)
        ready.wait()
        try:
            while True:
                task = client.post("/gradio_api/run/next_task", json={"data": []}).json()["data"][0]["task"]
                if task is None:
                    return
                letters = [s["letter"] for s in task["summaries"]]
                reply = client.post("/gradio_api/run/submit", json={"data": [
                    task["assignment_id"], letters[0], {c: 5 for c in letters}, {c: True for c in letters},
                    "better", False, None]})
                if reply.status_code == 200 and reply.json()["data"][0] == {"stored": True}:
                    acknowledged.append(task["assignment_id"])
        except (httpx.HTTPError, ValueError, KeyError):  # the app was killed under us
            return


@pytest.mark.slow
def test_an_app_killed_while_twenty_annotators_submit_loses_no_acknowledged_judgement(env: Path, ctx) -> None:  # type: ignore[no-untyped-def]
    seed(ctx, n_tasks=60, n_raters=ANNOTATORS)
    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    app = _serve(port)
    acknowledged: list[int] = []
    cookies: dict[str, str] = {}
    ready = threading.Barrier(ANNOTATORS + 1)
    crowd = [threading.Thread(target=_annotate, args=(url, name, acknowledged, {} if r else cookies, ready))
             for r, name in enumerate(rater_names(ANNOTATORS))]
    for t in crowd:
        t.start()
    ready.wait(timeout=120)
    deadline = time.monotonic() + 60
    while len(acknowledged) < 40 and time.monotonic() < deadline:
        time.sleep(0.05)
    app.send_signal(signal.SIGKILL)
    killed_at = utcnow()
    app.wait()
    for t in crowd:
        t.join(timeout=60)
    assert len(acknowledged) >= 40, "the crowd never got going"

    with ctx.transaction() as db:
        stored = db.scalars(select(Judgement.assignment_id)).all()
        assert len(stored) == len(set(stored))  # at most one judgement per assignment
        missing = set(acknowledged) - set(stored)
        assert not missing, f"acknowledged but not stored: {sorted(missing)}"
        for task in db.scalars(select(ComparisonTask)):
            count = db.scalar(select(func.count()).select_from(Judgement).where(Judgement.task_id == task.id))
            assert count == task.judgement_count <= task.replication_target
        submitted = db.scalar(select(func.count()).select_from(Assignment)
                              .where(Assignment.status == AssignmentStatus.SUBMITTED))
        assert submitted == len(stored)
        leased_at_kill = db.scalar(select(func.count()).select_from(Assignment)
                                   .where(Assignment.status == AssignmentStatus.LEASED,
                                          Assignment.lease_expires_at > killed_at))
        add_user(db, "latecomer", Role.ANNOTATOR, PASSWORD)
    assert leased_at_kill > 0  # the app died holding leases: they must come back
    time.sleep(LEASE_MINUTES * 60 + 0.5)
    with ctx.transaction() as db:
        latecomer = db.scalar(select(Rater).where(Rater.name == "latecomer"))
        not_full = db.scalar(select(func.count()).select_from(ComparisonTask)
                             .where(ComparisonTask.judgement_count < ComparisonTask.replication_target))
        open_to_latecomer = db.scalar(select(func.count()).select_from(
            open_tasks_query(latecomer.id, utcnow()).subquery()))
        assert open_to_latecomer == not_full  # no lease is stuck on a dead app

    app = _serve(port)  # a restarted app accepts the sessions of the killed one: they live in the database
    try:
        with httpx.Client(base_url=url, timeout=30, cookies=cookies) as client:
            reply = client.post("/gradio_api/run/next_task", json={"data": []})
            assert reply.status_code == 200 and "task" in reply.json()["data"][0]
    finally:
        app.terminate()
        app.wait(timeout=30)


@pytest.mark.sqlite  # another process holds SQLite's file lock; PostgreSQL's lock_timeout comes from the same setting
def test_a_database_busy_beyond_its_timeout_asks_to_try_again_and_stores_nothing(ctx) -> None:  # type: ignore[no-untyped-def]
    import sqlite3
    from dataclasses import replace

    from app.context import open_context
    from app.web import launch

    seed(ctx, n_tasks=2, n_raters=1)
    impatient = open_context(replace(ctx.settings, busy_timeout_s=0.5))
    port = free_port()
    server = launch(impatient, "127.0.0.1", port, block=False)
    blocker = sqlite3.connect(ctx.engine.url.database, isolation_level=None)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}/", timeout=30) as client:
            client.post("/login", data={"username": rater_names(1)[0], "password": PASSWORD}).raise_for_status()
            task = client.post("/gradio_api/run/next_task", json={"data": []}).json()["data"][0]["task"]
            letters = [s["letter"] for s in task["summaries"]]
            judgement = [task["assignment_id"], "A", {c: 3 for c in letters}, {c: False for c in letters}, None,
                         False, None]
            blocker.execute("BEGIN IMMEDIATE")  # another process holds the write lock past the timeout
            busy = client.post("/gradio_api/run/submit", json={"data": judgement})
            assert busy.json()["error"] == "The database is busy; nothing was stored. Try again in a moment."
            blocker.execute("ROLLBACK")
            with ctx.transaction() as db:
                assert db.scalar(select(func.count(Judgement.id))) == 0
            retried = client.post("/gradio_api/run/submit", json={"data": judgement})
            assert retried.json()["data"][0] == {"stored": True}
        with ctx.transaction() as db:
            (stored,) = db.scalars(select(Judgement)).all()
            assert stored.assignment_id == task["assignment_id"] and len(stored.ratings) == len(letters)
    finally:
        blocker.close()
        server.close()
        impatient.engine.dispose()
