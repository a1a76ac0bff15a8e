"""The annotator's page and the `next_task` / `submit` / `skip` API, in Gradio.

Handlers parse, call `annotate` inside one transaction, and render. The per-user state is the
id of the rater's current assignment, kept server-side in `gr.State`; texts and letters are all
that is sent to the browser.
"""
from __future__ import annotations

import html
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import gradio as gr

from annotate import submission_input as checked
from annotate.errors import InvalidInput
from annotate.queue import QueuePolicy
from annotate.submissions import LETTERS, SKIP_REASONS, Submission, skip, submit
from annotate.users import active_rater
from annotate.views import TaskView, next_task
from app.admin_guard import AdminEvents
from app.api_routes import build_api
from app.context import Context
from app.dashboard import build_dashboard
from app.errors import NotLoggedIn, shown_to_user
from app.server import Server, build_server, run
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


@dataclass
class Handlers:
    """The domain calls behind the page and the API: the account is looked up in a read-only
    snapshot, and each write (a lease, a judgement, a skip) is one transaction."""

    ctx: Context
    policy: QueuePolicy

    def _rater(self, db: Any, request: gr.Request | None) -> Rater:
        name = getattr(request, "username", None) if request is not None else None
        if not name:
            raise NotLoggedIn("Please log in.")
        rater = active_rater(db, name)
        if rater is None:
            raise NotLoggedIn("Your session has ended; please log in again.")
        return rater

    def _who(self, request: gr.Request | None) -> Rater:
        with self.ctx.reading() as db:  # no write lock for the lookup
            return self._rater(db, request)

    def next_task(self, request: gr.Request | None) -> tuple[TaskView | None, dict[str, int]]:
        view, progress = next_task(self.ctx.transaction, self.ctx.reading, self._who(request), self.policy)
        return view, progress.as_dict()

    def submit(self, assignment_id: int, sub: Submission, request: gr.Request | None) -> int:
        rater = self._who(request)
        with self.ctx.transaction() as db:
            return submit(db, assignment_id, rater, sub)

    def skip(self, assignment_id: int, reason: str, request: gr.Request | None) -> None:
        rater = self._who(request)
        with self.ctx.transaction() as db:
            skip(db, assignment_id, rater, reason)

    def is_admin(self, request: gr.Request | None) -> bool:
        try:  # on every admin event
            return self._who(request).role == Role.ADMIN
        except NotLoggedIn:
            return False


def _page_submission(best: Any, qualities: list[Any], factuals: list[Any], n: Any, strength: Any,
                     unacceptable: Any, comment: Any) -> Submission:
    """The page's radio labels in the API's terms, then the same checks as the API."""
    if type(n) is not int or not 0 <= n <= len(LETTERS):
        raise InvalidInput("reload the page", field="task")

    def quality(value: Any, letter: str) -> int | None:
        if value in (None, ""):
            return None
        if value not in QUALITY_ANCHORS:
            raise InvalidInput("choose one of the seven ratings", field=f"quality_{letter}")
        return QUALITY_ANCHORS.index(value) + 1

    def factual(value: Any, letter: str) -> bool | None:
        if value in (None, ""):
            return None
        if value not in ("yes", "no"):
            raise InvalidInput("choose factual or not factual", field=f"factual_{letter}")
        return value == "yes"

    letters = LETTERS[:n]
    return checked.submission(
        best=best or None, quality_by_letter={k: quality(qualities[i], k) for i, k in enumerate(letters)},
        factual_by_letter={k: factual(factuals[i], k) for i, k in enumerate(letters)},
        strength=strength or None, all_unacceptable=unacceptable, comment=comment)


def make_handlers(ctx: Context) -> Handlers:
    return Handlers(ctx, QueuePolicy(lease=timedelta(minutes=ctx.settings.lease_minutes),
                                     gold_rate=ctx.settings.gold_rate))


def build_app(h: Handlers) -> gr.Blocks:
    # delete_cache: the dashboard's CSV downloads live in Gradio's cache; files older than a day
    # are removed every hour, so the folder does not grow with every click.
    with gr.Blocks(title="Calibra · annotate", analytics_enabled=False, delete_cache=(3600, 86400)) as demo:
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
                        # Each summary shown whole (a long rewrite is the one to judge most
                        # carefully); only the document scrolls.
                        texts.append(gr.Textbox(label=f"Summary {letter}", interactive=False, lines=3,
                                                max_lines=400, elem_classes=["summary"],
                                                elem_id=f"summary-{letter}"))
                        qualities.append(gr.Radio(QUALITY_ANCHORS, label=f"Overall quality of {letter}",
                                                  elem_classes=["quality"], elem_id=f"quality-{letter}"))
                        factuals.append(gr.Radio(FACTUAL, label=f"Is {letter} factual?", elem_classes=["factual"],
                                                 elem_id=f"factual-{letter}"))
                    groups.append(col)
            best = gr.Radio(list(LETTERS), label="Best summary (keys 1-4)", elem_id="best")
            strength = gr.Radio(STRENGTHS, label="How much better than the next best?", elem_id="strength")
            unacceptable = gr.Checkbox(label="All summaries are unacceptable", elem_id="unacceptable")
            comment = gr.Textbox(label="Comment (optional)", lines=1, elem_id="comment")
            refusal = gr.HTML(elem_id="refusal")
            with gr.Row():
                submit_btn = gr.Button("Submit (Ctrl+Enter)", variant="primary", elem_id="submit-btn")
                reason = gr.Dropdown(list(SKIP_REASONS), label="Skip reason", value=SKIP_REASONS[0],
                                     elem_id="skip-reason")
                skip_btn = gr.Button("Skip", elem_id="skip-btn")
        admin = AdminEvents(h.is_admin)
        admin_tabs = [build_dashboard(admin, h.ctx.reading),  # a long read: no write lock held
                      build_training(admin, h.ctx.transaction, h.ctx.settings.round_schedule)]

        outputs = [assignment, shown, status, title, source, body, best, strength, unacceptable, comment,
                   *groups, *texts, *qualities, *factuals, refusal]

        def render(request: gr.Request) -> list[Any]:
            view, prog = h.next_task(request)
            line = f"Judged today: **{prog['judged_today']}** · Left in queue: **{prog['left_in_queue']}**"
            n = len(view.summaries) if view else 0
            head = [view.assignment_id if view else None, n,
                    line if view else line + "\n\nNo tasks left for you. Thank you!",
                    view.title if view else "", view.source if view else "", view.text if view else "",
                    gr.update(choices=list(LETTERS[:n]), value=None), None, False, ""]
            cols = [gr.update(visible=i < n) for i in range(len(LETTERS))]
            summary_texts = [view.summaries[i].text if view and i < n else "" for i in range(len(LETTERS))]
            return [*head, *cols, *summary_texts, *([None] * len(LETTERS)), *([None] * len(LETTERS)), ""]

        def kept_with(message: str) -> list[Any]:
            """The form as the annotator left it, and why it was refused above the buttons."""
            return [*(gr.skip() for _ in outputs[:-1]), f'<p role="alert">{html.escape(message)}</p>']

        def on_load(request: gr.Request) -> list[Any]:
            with shown_to_user("next_task", request.username):
                return render(request)

        def on_submit(form: dict[Any, Any], request: gr.Request) -> list[Any]:
            try:
                with shown_to_user("submit", request.username):
                    if form[assignment] is None:
                        raise InvalidInput("no task is open", field="assignment_id")
                    sub = _page_submission(form[best], [form[q] for q in qualities], [form[f] for f in factuals],
                                           form[shown], form[strength], form[unacceptable], form[comment])
                    h.submit(checked.assignment_id(form[assignment]), sub, request)
                    return render(request)
            except gr.Error as refused:
                return kept_with(refused.message)

        def on_skip(assignment_id: Any, reason_v: Any, request: gr.Request) -> list[Any]:
            try:
                with shown_to_user("skip", request.username):
                    if assignment_id is None:
                        raise InvalidInput("no task is open", field="assignment_id")
                    h.skip(checked.assignment_id(assignment_id), checked.skip_reason(reason_v), request)
                    return render(request)
            except gr.Error as refused:
                return kept_with(refused.message)

        private: dict[str, Any] = {"api_visibility": "private", "concurrency_limit": None}
        demo.load(on_load, None, outputs, **private)

        def show_admin_tabs(request: gr.Request) -> list[Any]:
            return [gr.update(visible=h.is_admin(request))] * len(admin_tabs)

        demo.load(show_admin_tabs, None, admin_tabs, **private)
        # Submit and skip, an annotator's every few seconds, skip Gradio's queue: one HTTP round
        # trip instead of joining the queue and reading its event stream (72 instead of 132 ms
        # from click to next task, docs/benchmarks.md). Off the queue Gradio shows a failure only
        # as "Error" over every output, so these two never raise: a refusal keeps the form and
        # says why in `refusal`.
        quick: dict[str, Any] = {"api_visibility": "private", "queue": False}
        submit_btn.click(on_submit, {assignment, shown, best, strength, unacceptable, comment, *qualities, *factuals},
                         outputs, **quick)
        skip_btn.click(on_skip, [assignment, reason], outputs, **quick)
        _add_api(h)
    return demo


def _add_api(h: Handlers) -> None:
    """Programmatic access for scripts and `gradio_client`, with the same login as the page."""

    def next_task(request: gr.Request) -> dict[str, Any]:
        """Lease the next task for the logged-in rater (or return the one they hold).

        Returns {"task": {assignment_id, title, source, text, summaries: [{letter, text}],
        lease_expires_at} or null, "progress": {judged_today, left_in_queue}}.
        """
        with shown_to_user("next_task", request.username):
            view, prog = h.next_task(request)
        return {"task": view.as_dict() if view else None, "progress": prog}

    def submit(assignment_id: int, best: str, quality: dict[str, int], factual: dict[str, bool],
               strength: str | None = None, all_unacceptable: bool = False, comment: str | None = None,
               request: gr.Request | None = None) -> dict[str, Any]:
        """Submit a judgement: best letter, quality 1-7 (whole numbers) and factual (true/false)
        per letter shown; strength one of significantly, better, slightly, negligibly; a comment
        of at most 2000 characters.

        Submitting the same assignment again stores nothing new. Returns {"stored": true}.
        """
        with shown_to_user("submit", getattr(request, "username", None)):
            sub = checked.submission(best=best, quality_by_letter=quality, factual_by_letter=factual,
                                     strength=strength, all_unacceptable=all_unacceptable, comment=comment)
            h.submit(checked.assignment_id(assignment_id), sub, request)
        return {"stored": True}

    def skip_task(assignment_id: int, reason: str, request: gr.Request | None = None) -> dict[str, Any]:
        """Give a task back with a reason (at most 200 characters); it goes to another rater.
        Returns {"skipped": true}."""
        with shown_to_user("skip", getattr(request, "username", None)):
            h.skip(checked.assignment_id(assignment_id), checked.skip_reason(reason), request)
        return {"skipped": True}

    # Off the queue: scripts call these directly over HTTP, without the queue's event stream.
    gr.api(next_task, api_name="next_task", queue=False)
    gr.api(submit, api_name="submit", queue=False)
    gr.api(skip_task, api_name="skip", queue=False)


def launch(ctx: Context, host: str, port: int, *, block: bool = True) -> Server:
    """Serve the annotation app with Calibra's login in front (`app.server`)."""
    handlers = make_handlers(ctx)
    demo = build_app(handlers)
    demo.queue(default_concurrency_limit=None)
    app = build_server(ctx, demo, head=KEYBOARD_JS, css=CSS, login_message="Log in with your Calibra account.",
                       routers=[build_api(ctx, handlers.policy)])
    return run(app, host, port, block=block)
