"""Raters stay blind and accounts stay locked, tried over HTTP against the running app."""
from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select, text

from annotate.users import add_user
from db.local_postgres import free_port
from db.models import Assignment, AssignmentStatus, Judgement, Role
from tests.test_web import PASSWORD, SECRET_MODELS, app_url  # noqa: F401 - app_url is a fixture

LEAKS = ("INSERT", "SELECT", "candidate", "sqlalchemy", "Traceback", "parameters", *SECRET_MODELS)


@contextmanager
def logged_in(url: str, name: str = "ann1") -> Iterator[httpx.Client]:
    with httpx.Client(base_url=url, timeout=60) as client:
        client.post("/login", data={"username": name, "password": PASSWORD}).raise_for_status()
        yield client


def call(client: httpx.Client, name: str, *args: Any) -> httpx.Response:
    """An API call as a script sends it (the routes `gradio_client` uses)."""
    return client.post(f"/gradio_api/run/{name}", json={"data": list(args)})


@pytest.fixture
def ann1(app_url: str) -> Iterator[httpx.Client]:  # noqa: F811 - the fixture imported above
    with logged_in(app_url) as client:
        yield client


def _error(reply: httpx.Response) -> str:
    assert reply.status_code != 200 or reply.json().get("error"), reply.text
    return str(reply.json().get("error"))


GOOD = {"best": "A", "quality": {c: 4 for c in "ABCD"}, "factual": {c: True for c in "ABCD"}}
BAD_FIELDS = [  # (what is sent instead, the field the refusal must name)
    ({"all_unacceptable": "yes"}, "all_unacceptable"),
    ({"factual": {**GOOD["factual"], "B": "no"}}, "factual_B"),
    ({"quality": {**GOOD["quality"], "C": True}}, "quality_C"),
    ({"quality": {**GOOD["quality"], "A": 4.0}}, "quality_A"),
    ({"quality": {**GOOD["quality"], "D": 9}}, "quality_D"),
    ({"quality": [4, 4, 4, 4]}, "quality"),
    ({"best": "AB"}, "best"),
    ({"best": 1}, "best"),
    ({"strength": {"much": True}}, "strength"),
    ({"comment": "x" * 2_000_001}, "comment"),
    ({"comment": "nul\x00byte"}, "comment"),
    ({"assignment_id": "1 OR 1=1"}, "assignment_id"),
    ({"assignment_id": True}, "assignment_id"),
]


@pytest.mark.parametrize(("change", "field"), BAD_FIELDS, ids=[f for _, f in BAD_FIELDS])
def test_a_bad_field_is_refused_by_name_and_reveals_nothing(ann1: httpx.Client, ctx, change: dict[str, Any],
                                                            field: str) -> None:  # type: ignore[no-untyped-def]
    task = call(ann1, "next_task").json()["data"][0]["task"]
    sent = {"assignment_id": task["assignment_id"], **GOOD, "strength": "better", "all_unacceptable": False,
            "comment": None, **change}
    reply = call(ann1, "submit", sent["assignment_id"], sent["best"], sent["quality"], sent["factual"],
                 sent["strength"], sent["all_unacceptable"], sent["comment"])
    error = _error(reply)
    assert error.startswith(f"{field}:"), error
    assert not any(word.lower() in reply.text.lower() for word in LEAKS), reply.text[:500]
    with ctx.transaction() as db:
        assert db.scalar(select(func.count(Judgement.id))) == 0
        assert db.get(Assignment, task["assignment_id"]).status == AssignmentStatus.LEASED


def test_someone_elses_or_a_made_up_assignment_is_not_found(app_url: str, ann1: httpx.Client) -> None:  # noqa: F811
    task = call(ann1, "next_task").json()["data"][0]["task"]
    with logged_in(app_url, "ann2") as ann2:
        for forged in (task["assignment_id"], 999_999):
            error = _error(call(ann2, "submit", forged, "A", GOOD["quality"], GOOD["factual"], None, False, None))
            assert error == f"no assignment {forged} for ann2"
            assert _error(call(ann2, "skip", forged, "other")) == f"no assignment {forged} for ann2"


def test_an_unexpected_error_tells_the_client_only_that_it_failed(ann1: httpx.Client, ctx,
                                                                   caplog: pytest.LogCaptureFixture) -> None:  # type: ignore[no-untyped-def]
    task = call(ann1, "next_task").json()["data"][0]["task"]
    with ctx.engine.begin() as conn:  # a broken schema: the insert fails with SQL and its parameters
        conn.execute(text("ALTER TABLE candidate_rating RENAME TO candidate_rating_gone"))
    reply = call(ann1, "submit", task["assignment_id"], "B", GOOD["quality"], GOOD["factual"], None, False, None)
    assert _error(reply) == "That failed; the error is in the server's log."
    assert not any(word.lower() in reply.text.lower() for word in LEAKS)
    assert any("candidate_rating" in r.getMessage() or "candidate_rating" in str(r.exc_info)
               for r in caplog.records if r.levelname == "ERROR")


def _wrong_login(url: str, name: str, password: str = "not the password") -> tuple[float, httpx.Response]:
    t0 = time.perf_counter()
    reply = httpx.post(f"{url}login", data={"username": name, "password": password}, timeout=60)
    return time.perf_counter() - t0, reply


def test_a_wrong_login_says_and_costs_the_same_for_known_and_unknown_names(app_url: str) -> None:  # noqa: F811
    known, unknown = [], []
    for i, name in enumerate(["ann1", "ann2", "boss"] * 2):  # interleaved, so a busy moment hits both
        known.append(_wrong_login(app_url, name))
        unknown.append(_wrong_login(app_url, f"nobody{i}"))
    too_long = [_wrong_login(app_url, name, "ü" * 40) for name in ("ann2", "nobody-else")]  # 80 bytes
    replies = {(r.status_code, r.text) for _, r in known + unknown + too_long}
    assert replies == {(401, '{"detail":"Incorrect name or password."}')}
    # The fastest of each: the least disturbed by whatever else the machine is doing.
    known_s, unknown_s = min(t for t, _ in known), min(t for t, _ in unknown)
    assert 0.67 < known_s / unknown_s < 1.5, (known_s, unknown_s)


def test_failed_logins_are_limited_per_account_then_per_address(app_url: str, ctx) -> None:  # type: ignore[no-untyped-def] # noqa: F811
    for _ in range(5):
        assert _wrong_login(app_url, "ann1")[1].status_code == 401
    _, refused = _wrong_login(app_url, "ann1", PASSWORD)  # even the right password, for now
    assert refused.status_code == 429 and "Too many failed logins" in refused.json()["detail"]
    assert int(refused.headers["Retry-After"]) > 0
    with logged_in(app_url, "ann2"):  # another account from the same address is not locked out
        pass
    for i in range(15):  # 20 failures from one address close it for every name
        _wrong_login(app_url, f"guess{i}")
    assert _wrong_login(app_url, "ann2", PASSWORD)[1].status_code == 429


def test_bad_logins_do_not_stall_other_requests(app_url: str, ann1: httpx.Client) -> None:  # noqa: F811
    call(ann1, "next_task")
    calm = min(_timed(lambda: call(ann1, "next_task")) for _ in range(3))
    # More logins at once than the server has threads: those are kept for everyone else.
    threads = [threading.Thread(target=_wrong_login, args=(app_url, f"stranger{i}")) for i in range(60)]
    for t in threads:
        t.start()
    time.sleep(0.3)
    busy = max(_timed(lambda: call(ann1, "next_task")) for _ in range(3))
    for t in threads:
        t.join()
    assert busy < 1.0, (calm, busy)  # each bcrypt check is a quarter of a second of CPU


def _timed(fn: Any) -> float:
    t0 = time.perf_counter()
    fn().raise_for_status()
    return time.perf_counter() - t0


def test_deactivation_and_a_new_password_end_open_sessions_at_once(app_url: str, ann1: httpx.Client,  # noqa: F811
                                                                   env) -> None:  # type: ignore[no-untyped-def]
    assert call(ann1, "next_task").status_code == 200
    with logged_in(app_url, "ann2") as ann2:
        cli = [sys.executable, "-m", "app.cli", "users"]
        done = subprocess.run([*cli, "deactivate", "ann1"], capture_output=True, text=True, check=True)
        assert "1 open session(s) ended" in done.stdout
        assert call(ann1, "next_task").status_code in (401, 403)
        assert _wrong_login(app_url, "ann1", PASSWORD)[1].status_code == 401
        done = subprocess.run([*cli, "passwd", "ann2", "--password-env", "NEWPW"], capture_output=True, text=True,
                              check=True, env={**os.environ, "NEWPW": "a-new-password"})
        assert "1 open session(s) ended" in done.stdout
        assert call(ann2, "next_task").status_code in (401, 403)


def test_sessions_expire(ctx, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    from dataclasses import replace

    from app.web import launch

    with ctx.transaction() as db:
        add_user(db, "brief", Role.ANNOTATOR, PASSWORD)
    ctx.settings = replace(ctx.settings, session_hours=1.5 / 3600)
    port = free_port()
    server = launch(ctx, "127.0.0.1", port, block=False)
    try:
        with logged_in(f"http://127.0.0.1:{port}/", "brief") as client:
            assert client.get("/config").status_code == 200
            time.sleep(2)
            assert client.get("/config").status_code == 401
            page = client.get("/", follow_redirects=False)
            assert page.status_code == 303 and page.headers["location"] == "login"
    finally:
        server.close()


def test_serve_beyond_loopback_refuses_while_demo_logins_keep_their_password(env, ctx) -> None:  # type: ignore[no-untyped-def]
    from app.cli import DEMO_PASSWORD

    with ctx.transaction() as db:
        add_user(db, "annotator1", Role.ANNOTATOR, DEMO_PASSWORD)
    serve = [sys.executable, "-m", "app.cli", "serve", "--no-worker", "--host", "0.0.0.0", "--port", str(free_port())]
    refused = subprocess.run(serve, capture_output=True, text=True, timeout=120)
    assert refused.returncode == 2 and "annotator1" in refused.stderr and "--allow-demo-accounts" in refused.stderr
    for args, env_extra in ((serve + ["--allow-demo-accounts"], {}), (serve, {"PW": "a-private-password"})):
        if env_extra:
            subprocess.run([sys.executable, "-m", "app.cli", "users", "passwd", "annotator1", "--password-env", "PW"],
                           check=True, env={**os.environ, **env_extra})
        app = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            assert app.stdout is not None and "Calibra is running" in app.stdout.readline()
        finally:
            app.terminate()
            app.wait(timeout=30)
