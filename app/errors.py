"""The one place that decides what a client is told when a handler fails.

Raters must stay blind: an error's own text can carry model names, candidate ids or a SQL
statement with its bound parameters. So only errors written for people pass through (a refusal
that names the field, "not found", "log in"); a busy database says to try again (the
transaction was rolled back, nothing was stored); anything else is logged here in full and the
client learns only that it failed.
"""
from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import gradio as gr

from annotate.errors import InvalidInput, NotFound
from db.errors import is_busy

log = logging.getLogger(__name__)
FAILED = "That failed; the error is in the server's log."
BUSY = "The database is busy; nothing was stored. Try again in a moment."


class NotLoggedIn(Exception):
    pass


@dataclass(frozen=True)
class Told:
    """What a client is told of a failure: an HTTP status and a message written for people."""

    status: int
    message: str


def told(exc: Exception, action: str, who: str | None) -> Told:
    """The one mapping from what a handler raised to what its client may learn."""
    if isinstance(exc, InvalidInput):
        return Told(422, f"{exc.field}: {exc.message}" if exc.field else exc.message)
    if isinstance(exc, NotFound):
        return Told(404, str(exc))
    if isinstance(exc, NotLoggedIn):
        return Told(401, str(exc))
    if is_busy(exc):
        log.warning("%s for %r: database busy", action, who)
        return Told(503, BUSY)
    log.exception("%s failed for %r", action, who)
    return Told(500, FAILED)


@contextmanager
def shown_to_user(action: str, who: str | None) -> Iterator[None]:
    """Run a Gradio handler's body; what it raises reaches the page as `told` says."""
    try:
        yield
    except gr.Error:
        raise
    except Exception as exc:
        raise gr.Error(told(exc, action, who).message) from None
