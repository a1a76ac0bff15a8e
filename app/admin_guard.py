"""The one gate in front of every admin handler.

A hidden tab is not a locked one: any logged-in session can call any event of the app over
HTTP (`/gradio_api/queue/join` with an `fn_index`) or `gradio_client`. So admin tabs do not wire
their events themselves; they register them through `AdminEvents`, which wraps each handler so
that the caller's role is checked on the server before the handler runs. A refusal says only
that the page is for admins; it is logged with the account's name. What else a handler raises
is shown as `app.errors.shown_to_user` decides for every handler of the app.
"""
from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

import gradio as gr

from app.errors import shown_to_user

log = logging.getLogger(__name__)
REFUSAL = "This page is for admins."
PRIVATE: dict[str, Any] = {"api_visibility": "private"}


class AdminEvents:
    """Registers admin event handlers, each behind the role check. `is_admin(request)` decides."""

    def __init__(self, is_admin: Callable[[gr.Request | None], bool]) -> None:
        self.is_admin = is_admin

    def guard(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        """`fn(admin_name, *inputs)` as a handler that Gradio gives the request first (its one
        positional parameter before the inputs) and that refuses anyone but an admin."""

        def guarded(request: gr.Request, *inputs: Any) -> Any:
            name = getattr(request, "username", None)
            if not self.is_admin(request):
                log.warning("refused %s to %r", fn.__name__, name)
                raise gr.Error(REFUSAL)
            with shown_to_user(fn.__name__, name):
                return fn(name, *inputs)

        guarded.__name__ = guarded.__qualname__ = fn.__name__  # the endpoint's name in /config
        return guarded

    def on(self, trigger: Any, fn: Callable[..., Any], inputs: Sequence[Any] | None,
           outputs: Sequence[Any] | Any | None) -> Any:
        """Wire `fn` to `trigger` (a component's event listener such as `button.click`, or
        `timer.tick`) behind the check; private to the API listing."""
        return trigger(self.guard(fn), list(inputs or []), outputs, **PRIVATE)
