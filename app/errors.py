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

import gradio as gr

from annotate.errors import InvalidInput, NotFound
from db.errors import is_busy

log = logging.getLogger(__name__)
FAILED = "That failed; the error is in the server's log."
BUSY = "The database is busy; nothing was stored. Try again in a moment."


class NotLoggedIn(Exception):
    pass


@contextmanager
def shown_to_user(action: str, who: str | None) -> Iterator[None]:
    """Run a handler's body; turn what it raises into a message fit for the client."""
    try:
        yield
    except InvalidInput as exc:
        raise gr.Error(f"{exc.field}: {exc.message}" if exc.field else exc.message) from None
    except (NotFound, NotLoggedIn) as exc:
        raise gr.Error(str(exc)) from None
    except gr.Error:
        raise
    except Exception as exc:
        if is_busy(exc):
            log.warning("%s for %r: database busy", action, who)
            raise gr.Error(BUSY) from None
        log.exception("%s failed for %r", action, who)
        raise gr.Error(FAILED) from None
