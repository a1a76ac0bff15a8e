"""Your own models' outputs: imported as candidates of external model versions, put in front of
annotators by `calibra tasks create`, and named in the reports (never on the page)."""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from sqlalchemy import func, select

from db import Candidate, ComparisonTask, ModelKind, ModelVersion
from tests.test_import import calibra, status

POSTS = [("Post about a noisy neighbour who plays drums at night.", "Neighbour drums at night; what to do?"),
         ("Post about a landlord who will not return the deposit.", "Landlord keeps deposit."),
         ("Post about a friend who never pays back small loans.", "Friend never repays loans.")]


def nested(path: Path) -> Path:
    path.write_text("".join(json.dumps({
        "id": f"d{i}", "text": text, "title": f"Title {i}", "reference": ref,
        "candidates": [{"text": f"Short take {i} from alpha.", "model": "alpha-7b"},
                       {"text": f"A much longer summary {i} written by the beta model, with details.",
                        "model": "beta-13b"}]}) + "\n" for i, (text, ref) in enumerate(POSTS)))
    return path


def test_outputs_of_two_models_become_tasks_that_name_each_model_only_in_reports(env: Path, ctx) -> None:  # type: ignore[no-untyped-def]
    code, out = calibra("import", "documents", str(nested(env / "outputs.jsonl")), "--json")
    assert code == 0, out
    report = json.loads(out)
    assert report["layout"] == "candidates" and report["documents_added"] == 3
    assert report["candidates_added"] == 6 and report["model_versions_added"] == 2
    with ctx.reading() as db:
        externals = db.scalars(select(ModelVersion).where(ModelVersion.kind == ModelKind.EXTERNAL)).all()
        assert sorted(v.name for v in externals) == ["alpha-7b", "beta-13b"]
        assert all(v.artifact_path is None for v in externals)
    before = status()
    code, out = calibra("import", "documents", str(nested(env / "again.jsonl")), "--json")
    assert code == 0 and json.loads(out)["candidates_added"] == 0 and status() == before  # re-import adds nothing
    code, out = calibra("tasks", "create", "--per-task", "3", "--json")
    assert code == 0 and json.JSONDecoder().raw_decode(out)[0]["tasks_created"] == 3, out
    with ctx.reading() as db:
        for task in db.scalars(select(ComparisonTask)):
            sources = sorted(s.candidate.model_version.name if s.candidate.model_version else s.candidate.origin.value
                             for s in task.slots)
            assert sources == ["alpha-7b", "beta-13b", "reference"]


@pytest.mark.parametrize("form", ["flat-jsonl", "rows-csv", "rows-parquet"])
def test_the_flat_and_per_row_forms(env: Path, ctx, form: str) -> None:  # type: ignore[no-untyped-def]
    if form == "flat-jsonl":
        path = env / "flat.jsonl"
        path.write_text("".join(json.dumps({"prompt": f"SUBREDDIT: r/advice\nTITLE: T{i}\nPOST: {text}",
                                            "responses": [f"alpha{i}", f"beta{i}"], "models": ["alpha", "beta"]}) + "\n"
                                for i, (text, _) in enumerate(POSTS)))
    else:
        rows = pd.DataFrame([{"doc_id": f"d{i}", "text": text, "candidate": f"{m}{i}", "model": m}
                             for i, (text, _) in enumerate(POSTS) for m in ("alpha", "beta")])
        path = env / ("rows.csv" if form == "rows-csv" else "rows.parquet")
        rows.to_csv(path, index=False) if form == "rows-csv" else rows.to_parquet(path, index=False)
    code, out = calibra("import", "documents", str(path), "--json")
    assert code == 0, out
    assert json.loads(out)["documents_added"] == 3 and json.loads(out)["candidates_added"] == 6
    with ctx.reading() as db:
        pairs = db.execute(select(Candidate.text, ModelVersion.name).join(ModelVersion)).all()
        assert sorted(pairs) == sorted((f"{m}{i}", m) for i in range(3) for m in ("alpha", "beta"))
    if form == "flat-jsonl":
        with ctx.reading() as db:  # the TL;DR layout of a prompt is read as post, title and subreddit
            assert db.scalar(select(func.count()).select_from(ModelVersion).where(ModelVersion.name == "alpha")) == 1


BAD = [  # (a record, the field the error must name)
    ({"id": "x", "text": "t", "candidates": []}, "candidates"),
    ({"id": "x", "text": "t", "candidates": ["just text"]}, "candidates[0]"),
    ({"id": "x", "text": "t", "candidates": [{"text": "s"}]}, "candidates[0].model"),
    ({"id": "x", "text": "t", "candidates": [{"text": 5, "model": "m"}]}, "candidates[0].text"),
    ({"id": "x", "text": "t", "candidates": [{"text": "s", "model": "m" * 200}]}, "candidates[0].model"),
    ({"prompt": "p", "responses": ["a", "b"], "models": ["m"]}, "models"),
    ({"id": "x", "text": "t", "candidates": [{"text": "s", "model": "all-minilm-l6-v2"}]}, "model"),
]


@pytest.mark.parametrize(("record", "field"), BAD, ids=[f for _, f in BAD])
def test_a_bad_record_names_file_line_and_field_and_stores_nothing(env: Path, ctx, record: dict[str, object],  # type: ignore[no-untyped-def]
                                                                   field: str) -> None:
    path = nested(env / "outputs.jsonl")
    path.write_text(path.read_text() + json.dumps(record) + "\n")
    before = status()
    code, out = calibra("import", "documents", str(path))
    assert code == 2 and f"outputs.jsonl:4: field '{field}'" in out, out
    assert status() == before


@pytest.mark.browser
def test_from_a_file_of_two_models_outputs_to_their_win_rates_on_the_dashboard(env: Path, ctx, browser) -> None:  # type: ignore[no-untyped-def]
    from annotate.users import add_user
    from app.web import launch
    from db.local_postgres import free_port
    from db.models import Role
    from tests.test_web import PASSWORD, open_as

    assert calibra("import", "documents", str(nested(env / "outputs.jsonl")))[0] == 0
    assert calibra("tasks", "create", "--per-task", "3", "--replication", "1")[0] == 0
    with ctx.transaction() as db:
        add_user(db, "ann1", Role.ANNOTATOR, PASSWORD)
        add_user(db, "boss", Role.ADMIN, PASSWORD)
    port = free_port()
    server = launch(ctx, "127.0.0.1", port, block=False)
    try:
        page, bodies = open_as(browser, f"http://127.0.0.1:{port}/", "ann1")
        for _ in POSTS:  # each task: rate the three summaries, choose the longest as best
            texts = [page.locator(f"#summary-{c} textarea").input_value() for c in "ABC"]
            for c in "ABC":
                page.locator(f"#quality-{c} label").nth(4).click()
                page.locator(f"#factual-{c} label").first.click()
            page.locator("#best label").nth(max(range(3), key=lambda i: len(texts[i]))).click()
            title = page.locator("#title textarea, #title input").first.input_value()
            page.locator("#submit-btn").click()
            page.wait_for_function("prev => { const t = document.querySelector('#title textarea, #title input');"
                                   " return t && t.value !== prev; }", arg=title, timeout=30_000)
        page.wait_for_selector("text=/No tasks left for you/", timeout=30_000)
        assert not any(m in body for body in bodies for m in ("alpha-7b", "beta-13b"))  # blind to the models

        admin = browser.new_page(viewport={"width": 1400, "height": 1600})  # no task left to wait for
        admin.goto(f"http://127.0.0.1:{port}/")
        admin.locator("input[type=text]").fill("boss")
        admin.locator("input[type=password]").fill(PASSWORD)
        admin.keyboard.press("Enter")
        admin.get_by_role("tab", name="Dashboard").click(timeout=30_000)
        admin.locator("#dashboard-compute").click()
        admin.wait_for_selector("text=/3\\s*judgements by\\s*1\\s*raters/", timeout=60_000)
        admin.locator("#models-table").get_by_text("beta-13b").first.wait_for(timeout=30_000)
        table = admin.locator("#models-table").evaluate(  # Gradio's grid: rows of header or body cells
            "t => [...t.querySelectorAll('[role=row]')].map(r => [...r.querySelectorAll("
            "'[role=columnheader], [role=gridcell]')].map(c => c.innerText.trim()))")
        rows = {cells[0]: dict(zip(table[0], cells, strict=False)) for cells in table[1:] if cells and cells[0]}
        # the annotator always chose beta's longer summary
        assert float(rows["beta-13b"]["win_rate"]) == 1.0 and float(rows["alpha-7b"]["win_rate"]) == 0.0, table
    finally:
        server.close()
