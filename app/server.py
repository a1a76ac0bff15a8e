"""The web server: Calibra's own login and sessions in front of the Gradio app.

Gradio's built-in login keeps sessions in one process's memory and checks passwords on its
event loop. Here a small FastAPI app owns `/login` and `/logout`, checks passwords in a worker
thread (`annotate.sessions.log_in`), keeps sessions in the database, and mounts the Gradio app
behind them: Gradio asks `_session_user` who is calling on every request, so an expired session,
a deactivated account or a changed password is refused at once, by every process.
"""
from __future__ import annotations

import html
import logging
import os
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

import anyio
import gradio as gr
import uvicorn
from fastapi import APIRouter, FastAPI, Form, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

from annotate.sessions import SESSION_COOKIE, LoginPolicy, LoginRefused, end_session, log_in, session_user
from app.context import Context
from app.request_log import RequestLog

log = logging.getLogger(__name__)

LOGIN_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Calibra · log in</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
 body {{ font-family: system-ui, sans-serif; display: grid; place-items: center; min-height: 90vh; margin: 0; }}
 form {{ display: grid; gap: .75rem; width: 18rem; }}
 input, button {{ font-size: 1rem; padding: .5rem; }}
 #message {{ color: #b00020; min-height: 1.2em; }}
</style></head>
<body><form id="login" method="post" action="login">
 <h1>Calibra</h1><p>{message}</p>
 <label>Name <input type="text" name="username" autocomplete="username" required autofocus></label>
 <label>Password <input type="password" name="password" autocomplete="current-password" required></label>
 <button type="submit">Log in</button><div id="message" role="alert"></div>
</form>
<script>
document.getElementById('login').addEventListener('submit', async (e) => {{
  e.preventDefault();
  const reply = await fetch('login', {{ method: 'POST', body: new FormData(e.target) }});
  if (reply.ok) {{ window.location.href = './'; return; }}
  const body = await reply.json().catch(() => ({{}}));
  document.getElementById('message').textContent = body.detail || 'Logging in failed.';
}});
</script></body></html>
"""


@dataclass
class Server:
    """A running app; `close()` stops it (tests and `calibra serve` in the foreground)."""

    uvicorn_server: uvicorn.Server
    thread: threading.Thread | None

    def close(self) -> None:
        self.uvicorn_server.should_exit = True
        if self.thread is not None:
            self.thread.join(timeout=10)


class _StrangersToLogin:
    """Gradio answers an unauthenticated page load with a bare 401; a person wants the form.

    A plain ASGI middleware: Starlette's `BaseHTTPMiddleware` would wrap every request, the
    JSON API's included, in streams and a task group of its own."""

    def __init__(self, app: ASGIApp, who: Callable[[Request], Awaitable[str | None]]) -> None:
        self.app, self.who = app, who

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "GET":
            request = Request(scope)
            if request.url.path == "/" and await self.who(request) is None:
                await RedirectResponse("login", status_code=303)(scope, receive, send)
                return
        await self.app(scope, receive, send)


def build_server(ctx: Context, blocks: gr.Blocks, *, head: str, css: str, login_message: str,
                 routers: Sequence[APIRouter] = ()) -> FastAPI:
    policy = LoginPolicy(session_hours=ctx.settings.session_hours)
    app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)
    # Password checks get threads of their own, one core's worth fewer than the machine has: a
    # burst of logins then waits its turn instead of taking every core, and the default pool and
    # one core stay free for everyone already logged in.
    login_threads = anyio.CapacityLimiter(max(1, (os.cpu_count() or 2) - 1))

    def lookup(token: str | None) -> str | None:
        with ctx.reading() as db:
            return session_user(db, token)

    async def _session_user(request: Request) -> str | None:
        return await run_in_threadpool(lookup, request.cookies.get(SESSION_COOKIE))

    app.add_middleware(_StrangersToLogin, who=_session_user)
    if ctx.settings.request_log is not None:
        app.add_middleware(RequestLog, path=ctx.settings.request_log)  # outermost: the whole request

    @app.get("/login", response_class=HTMLResponse)
    def login_page() -> str:
        return LOGIN_PAGE.format(message=html.escape(login_message))

    @app.post("/login")
    async def login(request: Request, username: str = Form(max_length=256),
                    password: str = Form(max_length=1024)) -> Response:
        address = request.client.host if request.client else "unknown"
        try:  # bcrypt takes a quarter of a second: never on the event loop, and never in the threads
            # every other request's session lookup needs (a burst of logins would queue them all)
            token = await anyio.to_thread.run_sync(log_in, ctx.transaction, username, password, address, policy,
                                                   limiter=login_threads)
        except LoginRefused as refused:
            headers = {"Retry-After": str(refused.retry_after_s)} if refused.retry_after_s else None
            return JSONResponse({"detail": str(refused)}, status_code=429 if headers else 401, headers=headers)
        reply = JSONResponse({"success": True})
        reply.set_cookie(SESSION_COOKIE, token, max_age=int(policy.session_hours * 3600), httponly=True, samesite="lax",
                         secure=request.url.scheme == "https")
        return reply

    @app.get("/logout")
    def logout(request: Request) -> Response:
        token = request.cookies.get(SESSION_COOKIE)
        if token:
            with ctx.transaction() as db:
                end_session(db, token)
        reply = RedirectResponse("login", status_code=303)
        reply.delete_cookie(SESSION_COOKIE)
        return reply

    for router in routers:  # plain routes first: the Gradio app is mounted at / and takes the rest
        app.include_router(router)

    # show_error=False: the client sees only `gr.Error` texts written for it (app.errors), never
    # an exception's own text, which may name models or carry SQL parameters.
    return gr.mount_gradio_app(app, blocks, path="/", auth_dependency=_session_user, show_error=False,
                               head=head, css=css, footer_links=["api"])


def run(app: FastAPI, host: str, port: int, *, block: bool) -> Server:
    """Serve `app`; in the foreground until interrupted, or in a thread (returned at once)."""
    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning"))
    if block:
        server.run()
        return Server(server, None)
    thread = threading.Thread(target=server.run, daemon=True, name="calibra-web")
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError(f"the web server did not start on {host}:{port}")
        time.sleep(0.01)
    return Server(server, thread)
