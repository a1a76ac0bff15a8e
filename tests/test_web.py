"""The annotation page in a real browser (Debian's Chromium, headless, driven by Playwright)."""
from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import func, select

from annotate.users import add_user
from db import (
    Assignment,
    Candidate,
    CandidateOrigin,
    ComparisonTask,
    Document,
    Judgement,
    ModelKind,
    ModelVersion,
    Rater,
    Role,
    TaskCandidate,
)
from db.local_postgres import free_port
from db.models import LoopSetting, RegistryEvent, TrainingRound, digest
from training.registry import active_policy

SECRET_MODELS = ["secret-policy-v7", "hidden-baseline-v2", "mystery-sft-v1"]
XSS = 'Look: <script>window.__xss = 1</script><img src=x onerror="window.__xss = 2"> **not bold**'
PASSWORD = "browser-pass-1"


@pytest.fixture
def app_url(ctx) -> Iterator[str]:  # type: ignore[no-untyped-def]
    from app.web import launch

    with ctx.transaction() as db:
        versions = [ModelVersion(kind=ModelKind.POLICY, name=n, base_model="x") for n in SECRET_MODELS]
        for i, body in enumerate([XSS, "My landlord kept the deposit.", "The bus was late again."]):
            doc = Document(source="test", title=f"Post {i}", subreddit="test", text=body, content_hash=digest(body))
            cands = [Candidate(document=doc, text=f"Summary {j} of post {i} <b>bold?</b>", text_hash=digest(f"{i}{j}"),
                               origin=CandidateOrigin.MODEL, model_version=versions[j % 3]) for j in range(4)]
            db.add(ComparisonTask(document=doc, replication_target=3, priority=10 - i,
                                  slots=[TaskCandidate(candidate=c, slot=j) for j, c in enumerate(cands)]))
        for name in ("ann1", "ann2"):
            add_user(db, name, Role.ANNOTATOR, PASSWORD)
        add_user(db, "boss", Role.ADMIN, PASSWORD)
    port = free_port()
    demo = launch(ctx, "127.0.0.1", port, block=False)
    yield f"http://127.0.0.1:{port}/"
    demo.close()


def open_as(browser, url: str, name: str):  # type: ignore[no-untyped-def]
    page = browser.new_page(viewport={"width": 1400, "height": 1600})
    bodies: list[str] = []

    def keep(response) -> None:  # type: ignore[no-untyped-def]
        try:
            bodies.append(response.text())
        except Exception:  # noqa: BLE001 - streamed or binary bodies cannot be read back
            pass

    page.on("response", keep)
    page.goto(url)
    page.locator("input[type=text]").fill(name)
    page.locator("input[type=password]").fill(PASSWORD)
    page.keyboard.press("Enter")
    page.wait_for_selector("#summary-A textarea", timeout=30_000)
    wait_for_task(page, None)
    return page, bodies


def wait_for_task(page, previous_title: str | None) -> str:  # type: ignore[no-untyped-def]
    page.wait_for_function(
        "prev => { const t = document.querySelector('#title textarea, #title input');"
        " return t && t.value && t.value !== prev; }", arg=previous_title, timeout=30_000)
    return page.locator("#title textarea, #title input").first.input_value()


def shown_summaries(page) -> list[str]:  # type: ignore[no-untyped-def]
    return [page.locator(f"#summary-{c} textarea").input_value() for c in "ABCD"]


def annotate_with_mouse(page) -> str:  # type: ignore[no-untyped-def]
    title = page.locator("#title textarea, #title input").first.input_value()
    for c in "ABCD":
        page.locator(f"#quality-{c} label").nth(4).click()  # 5 · good
        page.locator(f"#factual-{c} label").first.click()
    page.locator("#best label").nth(1).click()  # B
    page.locator("#strength label").nth(1).click()
    page.locator("#submit-btn").click()
    return wait_for_task(page, title)


def tab_into(page, selector: str) -> None:  # type: ignore[no-untyped-def]
    for _ in range(80):
        if page.evaluate(f"() => !!document.activeElement?.closest('{selector}')"):
            return
        page.keyboard.press("Tab")
    raise AssertionError(f"Tab never reached {selector}")


def annotate_with_keyboard(page) -> str:  # type: ignore[no-untyped-def]
    title = page.locator("#title textarea, #title input").first.input_value()
    for c in "ABCD":
        tab_into(page, f"#quality-{c}")
        page.keyboard.press("6")
        tab_into(page, f"#factual-{c}")
        page.keyboard.press("n" if c == "D" else "y")
    page.keyboard.press("3")  # best: C
    page.keyboard.press("Control+Enter")
    return wait_for_task(page, title)


@pytest.mark.browser
def test_two_annotators_mouse_and_keyboard(app_url: str, browser, ctx) -> None:  # type: ignore[no-untyped-def]
    page1, bodies1 = open_as(browser, app_url, "ann1")
    page2, bodies2 = open_as(browser, app_url, "ann2")

    # Both start on the highest-priority task, the one whose post carries HTML: shown as text.
    for page in (page1, page2):
        assert page.locator("#document textarea").input_value() == XSS
        assert page.evaluate("() => window.__xss") is None
        assert page.locator("img[src=x]").count() == 0
        assert "<b>bold?</b>" in shown_summaries(page)[0]
    orders = {}
    for page, name in ((page1, "ann1"), (page2, "ann2")):
        orders[name] = [shown_summaries(page)]
    annotate_with_mouse(page1)
    annotate_with_keyboard(page2)
    orders["ann1"].append(shown_summaries(page1))
    orders["ann2"].append(shown_summaries(page2))
    annotate_with_mouse(page1)
    annotate_with_keyboard(page2)
    # same tasks in the same sequence, each annotator with an own order of the summaries
    assert [sorted(o) for o in orders["ann1"]] == [sorted(o) for o in orders["ann2"]]
    assert orders["ann1"] != orders["ann2"]
    assert re.search(r"Judged today: 2 · Left in queue: 1\b", page1.locator("#progress").inner_text())

    for bodies, page in ((bodies1, page1), (bodies2, page2)):
        everything = "\n".join(bodies) + page.content()
        for secret in SECRET_MODELS + ["model_version", "candidate_id", "text_hash"]:
            assert secret not in everything

    with ctx.transaction() as db:
        judgements = db.scalars(select(Judgement)).all()
        by_rater = {r.name: r.id for r in db.scalars(select(Rater))}
        assert sorted(j.rater_id for j in judgements) == sorted([by_rater["ann1"]] * 2 + [by_rater["ann2"]] * 2)
        for j in judgements:
            best = db.get(Candidate, j.best_candidate_id)
            order = j.assignment.display_order
            if j.rater_id == by_rater["ann1"]:
                assert order.index(best.id) == 1 and {r.quality for r in j.ratings} == {5}
            else:
                assert order.index(best.id) == 2 and {r.quality for r in j.ratings} == {6}
                factual = {db.get(Candidate, r.candidate_id).id: r.factual for r in j.ratings}
                assert factual[order[3]] is False and sum(factual.values()) == 3


@pytest.mark.browser
def test_refused_submission_then_skip(app_url: str, browser, ctx) -> None:  # type: ignore[no-untyped-def]
    page, _ = open_as(browser, app_url, "ann1")
    title = page.locator("#title textarea, #title input").first.input_value()
    page.locator("#quality-B label").nth(2).click()
    page.locator("#best label").first.click()
    page.locator("#submit-btn").click()
    page.wait_for_selector("#refusal [role=alert]:has-text('quality_A')", timeout=15_000)
    assert re.search("rate the overall quality of summary A", page.content())
    # The refusal keeps the task and what was already chosen, so nothing has to be redone.
    assert page.locator("#title textarea, #title input").first.input_value() == title
    assert page.locator("#quality-B input").nth(2).is_checked() and page.locator("#best input").first.is_checked()
    assert page.get_by_text("Error", exact=True).count() == 0
    with ctx.transaction() as db:
        assert db.scalars(select(Judgement)).all() == []
    skipped_title = page.locator("#title textarea, #title input").first.input_value()
    page.locator("#skip-btn").click()
    assert wait_for_task(page, skipped_title) != skipped_title
    with ctx.transaction() as db:
        (skipped,) = [a for a in db.scalars(select(Assignment)) if a.status.value == "skipped"]
        assert skipped.skip_reason == "can't judge" and skipped.task.document.title == skipped_title


def test_api_for_scripts_with_gradio_client(app_url: str, ctx) -> None:  # type: ignore[no-untyped-def]
    from gradio_client import Client
    from gradio_client.exceptions import AppError

    client = Client(app_url, auth=("ann1", PASSWORD), verbose=False)
    endpoints = client.view_api(print_info=False, return_format="dict")["named_endpoints"]
    assert {"/next_task", "/submit", "/skip"} <= set(endpoints)
    first = client.predict(api_name="/next_task")
    task = first["task"]
    assert set(task) == {"assignment_id", "title", "source", "text", "summaries", "lease_expires_at"}
    assert [s["letter"] for s in task["summaries"]] == list("ABCD") and first["progress"]["left_in_queue"] == 3
    assert client.predict(api_name="/next_task")["task"]["assignment_id"] == task["assignment_id"]  # held lease
    with pytest.raises(AppError, match="quality_D"):
        client.predict(task["assignment_id"], "A", {c: 4 for c in "ABC"}, {c: True for c in "ABCD"}, api_name="/submit")
    args = (task["assignment_id"], "D", {c: 4 for c in "ABCD"}, {c: c != "B" for c in "ABCD"}, "slightly", True, "meh")
    assert client.predict(*args, api_name="/submit") == {"stored": True}
    assert client.predict(*args, api_name="/submit") == {"stored": True}  # a retry stores nothing new
    second = client.predict(api_name="/next_task")["task"]
    assert client.predict(second["assignment_id"], "can't judge", api_name="/skip") == {"skipped": True}
    with ctx.transaction() as db:
        (j,) = db.scalars(select(Judgement)).all()
        assert j.all_unacceptable and j.comment == "meh" and j.strength.value == "slightly"
        assert db.get(Candidate, j.best_candidate_id).id == j.assignment.display_order[3]
    with pytest.raises(ValueError, match="Could not login"):  # the login route refuses the password
        Client(app_url, auth=("ann1", "wrong password"), verbose=False)


@pytest.mark.browser
def test_dashboard_is_for_admins_only(app_url: str, browser, ctx) -> None:  # type: ignore[no-untyped-def]
    from gradio_client import Client

    for name in ("ann1", "ann2"):  # two judgements to report on, through the API
        client = Client(app_url, auth=(name, PASSWORD), verbose=False)
        task = client.predict(api_name="/next_task")["task"]
        client.predict(task["assignment_id"], "A", {c: 5 for c in "ABCD"}, {c: True for c in "ABCD"}, "better",
                       api_name="/submit")

    page, _ = open_as(browser, app_url, "ann1")
    assert page.get_by_role("tab", name="Annotate").count() == 1
    assert page.get_by_role("tab", name="Dashboard").count() == 0

    admin, _ = open_as(browser, app_url, "boss")
    admin.get_by_role("tab", name="Dashboard").click()
    admin.locator("#dashboard-compute").click()
    admin.wait_for_selector("text=/2\\s*judgements by\\s*2\\s*raters/", timeout=60_000)
    assert "pairwise_agreement" in admin.locator("#agreement-table").inner_text()
    models = admin.locator("#models-table").inner_text()
    assert any(secret in models for secret in SECRET_MODELS)  # admins do see model versions
    admin.wait_for_selector("#dashboard-csv a", timeout=30_000)
    admin.wait_for_function("() => document.querySelectorAll('.js-plotly-plot').length >= 5", timeout=30_000)
    admin.locator("#filter-since").locator("textarea, input").first.fill("yesterday")
    admin.locator("#dashboard-compute").click()
    admin.wait_for_selector("text=/since: 'yesterday' is not a date/", timeout=30_000)


# What an annotator's session may call; every other event of the app is an admin's.
ANNOTATOR_ENDPOINTS = {"on_load", "show_admin_tabs", "on_submit", "on_skip", "next_task", "submit", "skip"}


def _call_over_queue(client, fn_index: int, data: list) -> dict:  # type: ignore[no-untyped-def, type-arg]
    """One event through Gradio's queue over plain HTTP (`/gradio_api/queue/join` with an
    `fn_index`), as any page or script can send it; the completion message."""
    session = f"probe-{fn_index}"
    joined = client.post("/gradio_api/queue/join", json={"data": data, "event_data": None, "fn_index": fn_index,
                                                          "trigger_id": None, "session_hash": session})
    joined.raise_for_status()
    with client.stream("GET", f"/gradio_api/queue/data?session_hash={session}") as stream:
        for line in stream.iter_lines():
            if line.startswith("data:"):
                message = json.loads(line[5:])
                if message.get("msg") == "process_completed":
                    return message
    raise AssertionError(f"no completion for fn_index {fn_index}")


@pytest.mark.browser
def test_annotators_reach_no_admin_handler(app_url: str, browser, ctx) -> None:  # type: ignore[no-untyped-def]
    import httpx
    from gradio_client import Client

    page, _ = open_as(browser, app_url, "ann1")
    assert page.get_by_role("tab", name="Training").count() == 0
    with ctx.transaction() as db:
        before = (db.scalar(select(func.count(TrainingRound.id))), db.scalar(select(func.count(RegistryEvent.id))))
    with httpx.Client(base_url=app_url, timeout=30) as client:
        client.post("/login", data={"username": "ann1", "password": PASSWORD}).raise_for_status()
        dependencies = client.get("/config").json()["dependencies"]
        admin_only = [d for d in dependencies if d["api_name"] not in ANNOTATOR_ENDPOINTS]
        names = {d["api_name"] for d in admin_only}
        assert {"on_compute", "everything", "live", "on_run", "on_cancel", "on_promote", "on_rollback",
                "on_schedule"} <= names
        for dep in admin_only:
            # well-formed arguments where the handler has them, so only the role check can stop it
            data = {"on_run": [2, "reward", "sample-rank", False], "on_promote": ["tiny", "mine now"],
                    "on_rollback": ["mine"], "on_schedule": ["daily 01:00"]}.get(dep["api_name"],
                                                                               [None] * len(dep["inputs"]))
            done = _call_over_queue(client, dep["id"], data)
            assert done["success"] is False, dep["api_name"]
            assert done["output"]["error"] == "This page is for admins.", dep["api_name"]
    client_ = Client(app_url, auth=("ann1", PASSWORD), verbose=False)
    for dep in admin_only:  # gradio_client does not even address them
        with pytest.raises(ValueError, match="Invalid function index"):
            client_.predict(fn_index=dep["id"])
    with ctx.transaction() as db:
        after = (db.scalar(select(func.count(TrainingRound.id))), db.scalar(select(func.count(RegistryEvent.id))))
        assert after == before and db.scalar(select(LoopSetting.value)) is None


def wait_for_text(page, selector: str, text: str, timeout_ms: int = 30_000) -> None:  # type: ignore[no-untyped-def]
    page.wait_for_function("([sel, text]) => (document.querySelector(sel)?.innerText || '').includes(text)",
                           arg=[selector, text], timeout=timeout_ms)


def _progress_states(page, until: str, timeout_s: float) -> list[str]:  # type: ignore[no-untyped-def]
    """What the live progress line says, in order ("waiting" or a stage's name), until the
    history shows `until`."""
    seen: list[str] = []
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        text = page.locator("#round-progress").inner_text()
        match = re.search(r"stage (\w+)", text)
        state = match[1] if match else "waiting" if "waiting for a worker" in text else None
        if state and (not seen or seen[-1] != state):
            seen.append(state)
        if until in page.locator("#round-history").inner_text():
            return seen
        time.sleep(0.1)
    raise AssertionError(f"the history never showed {until!r}; progress went through {seen}")


@pytest.mark.browser
def test_admin_runs_watches_and_rolls_back_a_round(app_url: str, browser, loop_ready) -> None:  # type: ignore[no-untyped-def]
    from annotate.tasks import create_round_tasks
    from training.worker import Worker

    ctx = loop_ready
    stop = threading.Event()
    worker = Worker(ctx.transaction, ctx.engine, ctx.loop_settings(), create_round_tasks, poll_s=0.2,
                    heartbeat_s=0.2)
    thread = threading.Thread(target=worker.serve, args=(stop,), daemon=True)
    try:
        admin, _ = open_as(browser, app_url, "boss")
        admin.get_by_role("tab", name="Training").click()
        wait_for_text(admin, "#round-history", "No rounds yet")
        admin.locator("#round-run").click()
        wait_for_text(admin, "#training-message", "Round 0 requested")
        wait_for_text(admin, "#round-progress", "waiting for a worker")
        thread.start()  # a worker comes up, and the page follows it without being reloaded
        states = _progress_states(admin, "succeeded", timeout_s=600)
        assert states[0] == "waiting" and len(states) >= 2, states
        assert set(states[1:]) <= {"sft", "evaluate", "next_batch"}, states
        wait_for_text(admin, "#round-progress", "No round is running.")
        admin.get_by_role("tab", name="Annotate").click()
        admin.get_by_role("tab", name="Training").click()  # opening the tab again reloads the registry
        wait_for_text(admin, "#model-versions", "policy-sft")
        with ctx.transaction() as db:
            promoted = active_policy(db).name == "policy-sft"
        if not promoted:  # the gate kept the tiny policy: promote by hand, as an admin may
            admin.locator("#promote-version input").fill("policy-sft")
            admin.locator("#promote-version input").press("Enter")
            admin.locator("#promote-btn").click()
            wait_for_text(admin, "#training-message", "policy-sft is the active policy")
        admin.locator("#registry-reason").locator("textarea, input").first.fill("read the samples")
        admin.locator("#rollback-btn").click()
        wait_for_text(admin, "#training-message", "Rolled back: tiny is the active policy")
        assert "web:boss" in admin.locator("#registry-events").inner_text()
        with ctx.transaction() as db:
            assert active_policy(db).name == "tiny"
            event = db.scalar(select(RegistryEvent).order_by(RegistryEvent.id.desc()))
            assert (event.action, event.actor, event.reason) == ("rollback", "web:boss", "read the samples")
        admin.screenshot(path=str(Path(ctx.settings.home) / "training-tab.png"), full_page=True)
    finally:
        stop.set()
        if thread.is_alive():
            thread.join(timeout=60)


@pytest.mark.browser
def test_long_summaries_are_shown_whole(app_url: str, browser, ctx) -> None:  # type: ignore[no-untyped-def]
    long = " ".join(f"Sentence {i} of a summary that rewrites the whole post at length." for i in range(40))
    with ctx.transaction() as db:
        doc = Document(source="test", title="Long one", text="A post.", content_hash=digest("A long post."))
        cands = [Candidate(document=doc, text=f"{long} ({j})", text_hash=digest(f"long{j}"),
                           origin=CandidateOrigin.MODEL) for j in range(2)]
        db.add(ComparisonTask(document=doc, replication_target=3, priority=100,
                              slots=[TaskCandidate(candidate=c, slot=j) for j, c in enumerate(cands)]))
    page, _ = open_as(browser, app_url, "ann1")
    assert page.locator("#title textarea, #title input").first.input_value() == "Long one"
    for letter in "AB":
        box = page.locator(f"#summary-{letter} textarea")
        assert box.input_value().startswith("Sentence 0")
        overflow = box.evaluate("el => el.scrollHeight - el.clientHeight")
        assert overflow <= 2, f"summary {letter} scrolls by {overflow}px"
