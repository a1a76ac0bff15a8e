"""The issue's own walk-through: import posts, generate with the default policy, create tasks,
on SQLite and on PostgreSQL with only the URL changed; and task building on its own."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from annotate.errors import InvalidInput
from annotate.tasks import TaskSpec, create_tasks
from app.cli import cli
from db import (
    Candidate,
    CandidateOrigin,
    ComparisonTask,
    Document,
    ModelKind,
    ModelVersion,
)
from db.models import digest
from tests.conftest import TLDR

runner = CliRunner()


def run(*args: str) -> str:
    result = runner.invoke(cli, list(args))
    assert result.exit_code == 0, result.output
    return result.stdout


def _walk_through() -> dict[str, int]:
    run("import", "documents", str(TLDR / "posts_test400.jsonl"))
    run("generate", "--docs", "2", "--per-doc", "3", "--max-new-tokens", "24", "--seed", "0")
    out = json.loads(run("tasks", "create", "--json"))
    assert out["tasks_created"] == 2
    return json.loads(run("status", "--json"))


@pytest.mark.slow
def test_import_generate_tasks_on_sqlite(env: Path, ctx) -> None:  # type: ignore[no-untyped-def]
    counts = _walk_through()
    assert counts["documents"] == 400 and counts["tasks"] == 2 and counts["model_versions"] == 2
    assert 2 * 2 <= counts["candidates"] <= 2 * 3 + 2  # distinct samples plus the two references
    with ctx.transaction() as db:
        for task in db.scalars(select(ComparisonTask)):
            origins = {s.candidate.origin for s in task.slots}
            assert CandidateOrigin.REFERENCE in origins and CandidateOrigin.MODEL in origins
            assert 2 <= len(task.slots) <= 4 and task.replication_target == 3
        sample = db.scalars(select(Candidate).where(Candidate.origin == CandidateOrigin.MODEL)).first()
        assert sample.decoding["temperature"] == 0.7 and sample.decoding["top_k"] == 40
        assert sample.decoding["template"] == "chat" and 0 < sample.token_count <= 24
        assert sample.model_version.name == "smollm2-135m-instruct"
        first_two = set(db.scalars(select(Candidate.document_id).where(Candidate.origin == CandidateOrigin.MODEL)))
    # a repeated (or interrupted) run goes on with the documents that still need samples
    run("generate", "--docs", "2", "--per-doc", "1", "--max-new-tokens", "8")
    with ctx.transaction() as db:
        now = set(db.scalars(select(Candidate.document_id).where(Candidate.origin == CandidateOrigin.MODEL)))
    assert len(now - first_two) == 2


@pytest.mark.slow
@pytest.mark.postgres
def test_import_generate_tasks_on_postgresql(env: Path, pg_database: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CALIBRA_DATABASE_URL", pg_database)
    counts = _walk_through()
    assert counts["documents"] == 400 and counts["tasks"] == 2
    assert not (env / "home" / "calibra.db").exists()  # nothing went to SQLite


@pytest.mark.slow
def test_generate_from_a_file_without_the_database(env: Path) -> None:
    out = env / "samples.jsonl"
    run("generate", "--docs-file", str(TLDR / "posts_test400.jsonl"), "--out", str(out), "--docs", "2",
        "--per-doc", "2", "--max-new-tokens", "16", "--seed", "1")
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert {r["line"] for r in rows} == {1, 2} and all(r["summary"] for r in rows)
    assert json.loads(run("status", "--json"))["candidates"] == 0


def test_generate_refuses_bad_settings(env: Path) -> None:
    result = runner.invoke(cli, ["generate", "--temperature", "0"])
    assert result.exit_code == 2 and "temperature must be > 0" in result.output


def _doc_with(db, n_models: int, per_model: int, reference: bool = True) -> Document:  # type: ignore[no-untyped-def]
    doc = Document(source="t", text=f"post {n_models} {per_model}", content_hash=digest(f"post {n_models} {per_model}"),
                   reference_summary="the reference" if reference else None)
    db.add(doc)
    for m in range(n_models):
        version = ModelVersion(kind=ModelKind.POLICY, name=f"p{m}-{doc.text}", base_model="x")
        for i in range(per_model):
            text = f"model {m} sample {i}"
            db.add(Candidate(document=doc, text=text, text_hash=digest(text), origin=CandidateOrigin.MODEL,
                             model_version=version))
    db.flush()
    return doc


def test_tasks_mix_model_versions_and_the_reference(ctx) -> None:  # type: ignore[no-untyped-def]
    with ctx.transaction() as db:
        doc = _doc_with(db, n_models=3, per_model=3)
        (task,) = create_tasks(db, TaskSpec(per_task=4, replication=3))
        cands = [s.candidate for s in task.slots]
        assert len(cands) == 4
        assert sum(c.origin == CandidateOrigin.REFERENCE for c in cands) == 1
        assert len({c.model_version_id for c in cands if c.model_version_id}) == 3
        # the six model candidates left make two more tasks; the reference anchors each again
        (second,) = create_tasks(db, TaskSpec(per_task=4), limit=1)
        (third,) = create_tasks(db, TaskSpec(per_task=4))
        assert second.document_id == third.document_id == doc.id
        used = [s.candidate for t in (task, second, third) for s in t.slots
                if s.candidate.origin == CandidateOrigin.MODEL]
        assert len(used) == len({c.id for c in used}) == 9  # every model candidate in exactly one task
        assert create_tasks(db, TaskSpec(per_task=4)) == []  # nothing left to compare


def test_tasks_need_two_candidates_and_a_size_of_two_to_four(ctx) -> None:  # type: ignore[no-untyped-def]
    with ctx.transaction() as db:
        _doc_with(db, n_models=1, per_model=1, reference=False)
        assert create_tasks(db, TaskSpec(per_task=2)) == []
    for bad in (1, 5):
        with pytest.raises(InvalidInput, match="per_task"):
            TaskSpec(per_task=bad)
