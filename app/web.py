"""The annotator's page and the `next_task` / `submit` / `skip` API, in Gradio.

Handlers parse, call `annotate` inside one transaction, and render. The per-user state is the
id of the rater's current assignment, kept server-side in `gr.State`; texts and letters are all
that is sent to the browser.
"""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import gradio as gr

from annotate.errors import InvalidInput, NotFound
from annotate.queue import QueuePolicy, next_assignment
from annotate.submissions import (
    LETTERS,
    SKIP_REASONS,
    Submission,
    SummaryRating,
    skip,
    submit,
)
from annotate.users import active_rater, authenticate
from annotate.views import TaskView, progress, task_view
from app.admin_guard import AdminEvents
from app.context import Context
from app.dashboard import build_dashboard
from app.training_page import build_training
from db.models import Rater, Role, Strength

QUALITY_ANCHORS = ["1 · very poor", "2 · poor", "3 · below average", "4 · acceptable", "5 · good",
                   "6 · very good", "7 · excellent"]
STRENGTHS = [("significantly better", Strength.SIGNIFICANTLY.value), ("better", Strength.BETTER.value),
             ("slightly better", Strength.SLIGHTLY.value), ("negligibly better / unsure", Strength.NEGLIGIBLY.value)]
FACTUAL = [("factual", "yes"), ("not factual", "no")]

# Keyboard first: 1-4 choose the best summary; inside a quality group 1-7 rate it; inside a
# factual group y/n answer; Ctrl+Enter submits.
KEYBOARD_JS = """
<script>
document.addEventListener('keydown', (e) => {
  const active = document.activeElement;
  const typing = active && (active.tagName === 'TEXTAREA' || (active.tagName === 'INPUT' && active.type === 'text'));
  if (e.key === 'Enter' && (e.ctrlKey || e.metaKey)) {
    document.querySelector('#submit-btn')?.click(); e.preventDefault(); return;
  }
  if (typing || e.ctrlKey || e.metaKey || e.altKey) return;
  const pick = (group, index) => {
    const inputs = group ? group.querySelectorAll('input[type=radio]') : [];
    if (index < inputs.length) { inputs[index].click(); inputs[index].focus(); e.preventDefault(); }
  };
  const quality = active && active.closest('.quality');
  const factual = active && active.closest('.factual');
  if (quality && /^[1-7]$/.test(e.key)) return pick(quality, Number(e.key) - 1);
  if (factual && /^[yn]$/i.test(e.key)) return pick(factual, e.key.toLowerCase() === 'y' ? 0 : 1);
  if (/^[1-4]$/.test(e.key)) pick(document.querySelector('#best'), Number(e.key) - 1);
});
</script>
"""

CSS = """
#document textarea { font-size: 0.95rem; }
.summary textarea { font-size: 1rem; }
"""


class NotLoggedIn(Exception):
    pass


@dataclass
class Handlers:
    """The domain calls behind the page and the API; one transaction per request."""

    ctx: Context
    policy: QueuePolicy

    def _rater(self, db: Any, request: gr.Request | None) -> Rater:
        name = getattr(request, "username", None) if request is not None else None
        if not name:
            raise NotLoggedIn("Please log in.")
        rater = active_rater(db, name)
        if rater is None:
            raise NotLoggedIn(f"No active account {name!r}.")
        return rater

    def next_task(self, request: gr.Request | None) -> tuple[TaskView | None, dict[str, int]]:
        with self.ctx.transaction() as db:
            rater = self._rater(db, request)
            assignment = next_assignment(db, rater, self.policy)
            view = task_view(db, assignment) if assignment is not None else None
            return view, progress(db, rater).as_dict()

    def submit(self, assignment_id: int, sub: Submission, request: gr.Request | None) -> int:
        with self.ctx.transaction() as db:
            return submit(db, assignment_id, self._rater(db, request), sub).id

    def skip(self, assignment_id: int, reason: str, request: gr.Request | None) -> None:
        with self.ctx.transaction() as db:
            skip(db, assignment_id, self._rater(db, request), reason)

    def is_admin(self, request: gr.Request | None) -> bool:
        try:
            with self.ctx.transaction() as db:
                return self._rater(db, request).role == Role.ADMIN
        except NotLoggedIn:
            return False

    def check_login(self, username: str, password: str) -> bool:
        with self.ctx.transaction() as db:
            return authenticate(db, username, password) is not None


@contextmanager
def shown_to_user() -> Iterator[None]:
    """The one place that turns domain errors into messages on the page or in the API reply."""
    try:
        yield
    except InvalidInput as exc:
        raise gr.Error(f"{exc.field}: {exc.message}" if exc.field else exc.message) from None
    except (NotFound, NotLoggedIn) as exc:
        raise gr.Error(str(exc)) from None


def _submission(best: str | None, qualities: list[Any], factuals: list[Any], n: int, strength: str | None,
                unacceptable: bool, comment: str | None) -> Submission:
    def quality(value: Any) -> int | None:
        if value in (None, ""):
            return None
        return int(str(value).split(" ")[0])

    ratings = {LETTERS[i]: SummaryRating(quality(qualities[i]),
                                          None if factuals[i] in (None, "") else factuals[i] == "yes")
               for i in range(n)}
    return Submission(best=best or None, ratings=ratings, strength=strength or None,
                      all_unacceptable=bool(unacceptable), comment=comment)


def make_handlers(ctx: Context) -> Handlers:
    return Handlers(ctx, QueuePolicy(lease=timedelta(minutes=ctx.settings.lease_minutes),
                                     gold_rate=ctx.settings.gold_rate))


def build_app(h: Handlers) -> gr.Blocks:
    with gr.Blocks(title="Calibra · annotate", analytics_enabled=False) as demo:
        assignment = gr.State(None)  # server-side: the current assignment id
        shown = gr.State(0)  # how many summaries this task has
        with gr.Tab("Annotate", elem_id="annotate-tab"):
            gr.Markdown("## Which summary is best?")
            status = gr.Markdown(elem_id="progress")
            with gr.Group():
                title = gr.Textbox(label="Title", interactive=False, elem_id="title")
                source = gr.Textbox(label="Source", interactive=False, elem_id="source")
                body = gr.Textbox(label="Document", interactive=False, lines=8, max_lines=18, elem_id="document",
                                  autoscroll=False)
            groups, texts, qualities, factuals = [], [], [], []
            with gr.Row(equal_height=False):
                for letter in LETTERS:
                    with gr.Column(visible=False, min_width=240) as col:
                        texts.append(gr.Textbox(label=f"Summary {letter}", interactive=False, lines=3,
                                                elem_classes=["summary"], elem_id=f"summary-{letter}"))
                        qualities.append(gr.Radio(QUALITY_ANCHORS, label=f"Overall quality of {letter}",
                                                  elem_classes=["quality"], elem_id=f"quality-{letter}"))
                        factuals.append(gr.Radio(FACTUAL, label=f"Is {letter} factual?", elem_classes=["factual"],
                                                 elem_id=f"factual-{letter}"))
                    groups.append(col)
            best = gr.Radio(list(LETTERS), label="Best summary (keys 1-4)", elem_id="best")
            strength = gr.Radio(STRENGTHS, label="How much better than the next best?", elem_id="strength")
            unacceptable = gr.Checkbox(label="All summaries are unacceptable", elem_id="unacceptable")
            comment = gr.Textbox(label="Comment (optional)", lines=1, elem_id="comment")
            with gr.Row():
                submit_btn = gr.Button("Submit (Ctrl+Enter)", variant="primary", elem_id="submit-btn")
                reason = gr.Dropdown(list(SKIP_REASONS), label="Skip reason", value=SKIP_REASONS[0],
                                     elem_id="skip-reason")
                skip_btn = gr.Button("Skip", elem_id="skip-btn")
        admin = AdminEvents(h.is_admin)
        admin_tabs = [build_dashboard(admin, h.ctx.transaction),
                      build_training(admin, h.ctx.transaction, h.ctx.settings.round_schedule)]

        outputs = [assignment, shown, status, title, source, body, best, strength, unacceptable, comment,
                   *groups, *texts, *qualities, *factuals]

        def render(request: gr.Request) -> list[Any]:
            with shown_to_user():
                view, prog = h.next_task(request)
            line = f"Judged today: **{prog['judged_today']}** · Left in queue: **{prog['left_in_queue']}**"
            n = len(view.summaries) if view else 0
            head = [view.assignment_id if view else None, n,
                    line if view else line + "\n\nNo tasks left for you. Thank you!",
                    view.title if view else "", view.source if view else "", view.text if view else "",
                    gr.update(choices=list(LETTERS[:n]), value=None), None, False, ""]
            cols = [gr.update(visible=i < n) for i in range(len(LETTERS))]
            summary_texts = [view.summaries[i].text if view and i < n else "" for i in range(len(LETTERS))]
            return [*head, *cols, *summary_texts, *([None] * len(LETTERS)), *([None] * len(LETTERS))]

        def on_submit(form: dict[Any, Any], request: gr.Request) -> list[Any]:
            if form[assignment] is None:
                raise gr.Error("No task is open.")
            sub = _submission(form[best], [form[q] for q in qualities], [form[f] for f in factuals], form[shown],
                              form[strength], form[unacceptable], form[comment])
            with shown_to_user():
                h.submit(form[assignment], sub, request)
            return render(request)

        def on_skip(assignment_id: int | None, reason_v: str, request: gr.Request) -> list[Any]:
            if assignment_id is None:
                raise gr.Error("No task is open.")
            with shown_to_user():
                h.skip(assignment_id, reason_v, request)
            return render(request)

        private: dict[str, Any] = {"api_visibility": "private", "concurrency_limit": None}
        demo.load(render, None, outputs, **private)
        def show_admin_tabs(request: gr.Request) -> list[Any]:
            return [gr.update(visible=h.is_admin(request))] * len(admin_tabs)

        demo.load(show_admin_tabs, None, admin_tabs, **private)
        submit_btn.click(on_submit, {assignment, shown, best, strength, unacceptable, comment, *qualities, *factuals},
                         outputs, **private)
        skip_btn.click(on_skip, [assignment, reason], outputs, **private)
        _add_api(h)
    return demo


def _add_api(h: Handlers) -> None:
    """Programmatic access for scripts and `gradio_client`, with the same login as the page."""

    def next_task(request: gr.Request) -> dict[str, Any]:
        """Lease the next task for the logged-in rater (or return the one they hold).

        Returns {"task": {assignment_id, title, source, text, summaries: [{letter, text}],
        lease_expires_at} or null, "progress": {judged_today, left_in_queue}}.
        """
        with shown_to_user():
            view, prog = h.next_task(request)
        return {"task": view.as_dict() if view else None, "progress": prog}

    def submit(assignment_id: int, best: str, quality: dict[str, int], factual: dict[str, bool],
               strength: str | None = None, all_unacceptable: bool = False, comment: str | None = None,
               request: gr.Request | None = None) -> dict[str, Any]:
        """Submit a judgement: best letter, quality 1-7 and factual per letter shown.

        Submitting the same assignment again stores nothing new. Returns {"stored": true}.
        """
        letters = sorted(set(quality) | set(factual))
        sub = Submission(best=best, ratings={k: SummaryRating(quality.get(k), factual.get(k)) for k in letters},
                         strength=strength, all_unacceptable=all_unacceptable, comment=comment)
        with shown_to_user():
            h.submit(int(assignment_id), sub, request)
        return {"stored": True}

    def skip_task(assignment_id: int, reason: str, request: gr.Request | None = None) -> dict[str, Any]:
        """Give a task back with a reason; it goes to another rater. Returns {"skipped": true}."""
        with shown_to_user():
            h.skip(int(assignment_id), reason, request)
        return {"skipped": True}

    # Off the queue: scripts call these directly over HTTP, without the queue's event stream.
    gr.api(next_task, api_name="next_task", queue=False)
    gr.api(submit, api_name="submit", queue=False)
    gr.api(skip_task, api_name="skip", queue=False)


def launch(ctx: Context, host: str, port: int, *, block: bool = True) -> gr.Blocks:
    handlers = make_handlers(ctx)
    demo = build_app(handlers)
    demo.queue(default_concurrency_limit=None)
    demo.launch(server_name=host, server_port=port, auth=handlers.check_login,
                auth_message="Log in with your Calibra account.", head=KEYBOARD_JS, css=CSS,
                prevent_thread_lock=not block, show_error=True, quiet=not block)
    return demo
