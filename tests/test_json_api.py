"""The plain JSON API (/api/next_task, /api/submit, /api/skip): the same login, checks and
domain calls as the page and Gradio's endpoints."""
from __future__ import annotations

from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from db.models import Assignment, AssignmentStatus, Judgement
from tests.test_web import PASSWORD, SECRET_MODELS, app_url  # noqa: F401 - app_url is a fixture


@pytest.fixture
def api(app_url: str) -> Any:  # noqa: F811 - the fixture imported above
    with httpx.Client(base_url=app_url, timeout=60) as client:
        client.post("/login", data={"username": "ann1", "password": PASSWORD}).raise_for_status()
        yield client


def test_a_judgement_and_a_skip_through_the_json_api(api: httpx.Client, ctx) -> None:  # type: ignore[no-untyped-def]
    got = api.post("/api/next_task").json()
    task = got["task"]
    assert set(task) == {"assignment_id", "title", "source", "text", "summaries", "lease_expires_at"}
    assert got["progress"]["left_in_queue"] == 3
    letters = [s["letter"] for s in task["summaries"]]
    judgement = {"assignment_id": task["assignment_id"], "best": "B", "quality": {c: 6 for c in letters},
                 "factual": {c: True for c in letters}, "strength": "slightly", "comment": "fine"}
    assert api.post("/api/submit", json=judgement).json() == {"stored": True}
    assert api.post("/api/submit", json=judgement).json() == {"stored": True}  # a retry stores nothing new
    following = api.post("/api/next_task").json()["task"]
    assert api.post("/api/skip", json={"assignment_id": following["assignment_id"], "reason": "other"}).json() == \
        {"skipped": True}
    with ctx.transaction() as db:
        (stored,) = db.scalars(select(Judgement)).all()
        assert stored.comment == "fine" and stored.strength.value == "slightly"
        assert db.get(Assignment, following["assignment_id"]).status == AssignmentStatus.SKIPPED
    assert not any(name in str(got) for name in SECRET_MODELS)


@pytest.mark.parametrize(("body", "status", "detail"), [
    ({"assignment_id": 1, "best": "AB", "quality": {}, "factual": {}}, 422, "best: "),
    ({"assignment_id": "1", "best": "A"}, 422, "assignment_id: "),
    ([1, 2, 3], 422, "body: "),
    ({"assignment_id": 999_999, "best": "A", "quality": {"A": 3}, "factual": {"A": True}}, 404, "no assignment"),
])
def test_refusals_name_the_field_and_store_nothing(api: httpx.Client, ctx, body: Any, status: int,  # type: ignore[no-untyped-def]
                                                   detail: str) -> None:
    api.post("/api/next_task")
    reply = api.post("/api/submit", json=body)
    assert reply.status_code == status and reply.json()["detail"].startswith(detail), reply.text
    with ctx.transaction() as db:
        assert db.scalar(select(func.count(Judgement.id))) == 0


def test_without_a_session_the_api_refuses(app_url: str) -> None:  # noqa: F811
    reply = httpx.post(f"{app_url}api/next_task", timeout=30)
    assert reply.status_code == 401 and "log in" in reply.json()["detail"]
