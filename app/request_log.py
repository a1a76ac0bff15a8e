"""One line per HTTP request, appended to a file, for checking a load test against the server.

A load generator times each request from its side; when it runs short of CPU its own queueing
is added to every figure. With `request_log` set, the app writes what it measured itself:

    <unix time>\t<method>\t<path>\t<status>\t<milliseconds>

from the request's arrival in the app to the last byte of its response. Off by default.
"""
from __future__ import annotations

import time
from pathlib import Path

from starlette.types import ASGIApp, Message, Receive, Scope, Send


class RequestLog:
    """A plain ASGI middleware: it sees each response's status and its last body part."""

    def __init__(self, app: ASGIApp, path: Path) -> None:
        self.app = app
        # Line-buffered: a line is whole on disk as soon as it is written. The event loop runs
        # every middleware call in one thread, so lines never interleave.
        path.parent.mkdir(parents=True, exist_ok=True)
        self.out = open(path, "a", buffering=1)  # noqa: SIM115 - open for the app's lifetime

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start, status = time.perf_counter(), 0

        async def timed(message: Message) -> None:
            nonlocal status
            await send(message)
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body" and not message.get("more_body", False):
                self.out.write(f"{time.time():.3f}\t{scope['method']}\t{scope['path']}\t{status}\t"
                               f"{(time.perf_counter() - start) * 1000:.2f}\n")

        await self.app(scope, receive, timed)
