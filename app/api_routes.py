"""The JSON API for scripts and crowds, as plain routes beside the Gradio app.

`POST /api/next_task`, `/api/submit` and `/api/skip` do what the page's buttons and Gradio's
`/gradio_api/run/...` endpoints do, with the same login (the `calibra-session` cookie), the same
checks (`annotate.submission_input`) and the same domain calls, without Gradio's event machinery
around them. The session's account is looked up in a read-only snapshot, and only the writes
(a lease, a judgement, a skip) take a write transaction. Failures are
told as `app.errors.told` decides: `{"detail": "field: message"}` with 422, 401, 404, 503
(busy: try again) or 500.
"""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated, Any

from fastapi import APIRouter, Body, HTTPException, Request

from annotate import submission_input as checked
from annotate.errors import InvalidInput
from annotate.queue import QueuePolicy
from annotate.sessions import SESSION_COOKIE, session_rater
from annotate.submissions import skip, submit
from annotate.views import next_task as next_task_view
from app.context import Context
from app.errors import NotLoggedIn, told
from db.models import Rater


@contextmanager
def _refused_as_http(action: str, request: Request) -> Iterator[None]:
    try:
        yield
    except HTTPException:
        raise
    except Exception as exc:
        answer = told(exc, action, request.client.host if request.client else None)
        headers = {"Retry-After": "1"} if answer.status == 503 else None
        raise HTTPException(answer.status, answer.message, headers=headers) from None


def _rater(db: Any, request: Request) -> Rater:
    rater = session_rater(db, request.cookies.get(SESSION_COOKIE))
    if rater is None:
        raise NotLoggedIn("Please log in (POST /login).")
    return rater


def _fields(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise InvalidInput("must be a JSON object", field="body")
    return body


def build_api(ctx: Context, policy: QueuePolicy) -> APIRouter:
    router = APIRouter(prefix="/api")

    # Plain `def` handlers: FastAPI runs them in its thread pool, off the event loop.
    @router.post("/next_task")
    def next_task(request: Request) -> dict[str, Any]:
        """The rater's current task (or a new lease on the next one) and their progress:
        {"task": {assignment_id, title, source, text, summaries: [{letter, text}],
        lease_expires_at} or null, "progress": {judged_today, left_in_queue}}."""
        with _refused_as_http("next_task", request):
            with ctx.reading() as db:
                rater = _rater(db, request)
            view, progress = next_task_view(ctx.transaction, ctx.reading, rater, policy)
            return {"task": view.as_dict() if view else None, "progress": progress.as_dict()}

    @router.post("/submit")
    def submit_judgement(request: Request, body: Annotated[Any, Body()] = None) -> dict[str, Any]:
        """{"assignment_id", "best", "quality": {letter: 1-7}, "factual": {letter: bool},
        "strength"?, "all_unacceptable"?, "comment"?} -> {"stored": true}."""
        with _refused_as_http("submit", request):
            fields = _fields(body)
            sub = checked.submission(best=fields.get("best"), quality_by_letter=fields.get("quality"),
                                     factual_by_letter=fields.get("factual"), strength=fields.get("strength"),
                                     all_unacceptable=fields.get("all_unacceptable", False),
                                     comment=fields.get("comment"))
            assignment_id = checked.assignment_id(fields.get("assignment_id"))
            with ctx.reading() as db:
                rater = _rater(db, request)
            with ctx.transaction() as db:
                submit(db, assignment_id, rater, sub)
        return {"stored": True}

    @router.post("/skip")
    def skip_task(request: Request, body: Annotated[Any, Body()] = None) -> dict[str, Any]:
        """{"assignment_id", "reason"} -> {"skipped": true}; the task goes to another rater."""
        with _refused_as_http("skip", request):
            fields = _fields(body)
            assignment_id, reason = checked.assignment_id(fields.get("assignment_id")), \
                checked.skip_reason(fields.get("reason"))
            with ctx.reading() as db:
                rater = _rater(db, request)
            with ctx.transaction() as db:
                skip(db, assignment_id, rater, reason)
        return {"skipped": True}

    return router
