"""Every import format, good and bad files, through the `calibra import documents` command."""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from sqlalchemy import func, select, text
from typer.testing import CliRunner

from annotate.errors import InvalidInput
from annotate.importing import import_files
from app.cli import cli
from db import Assignment, Candidate, ComparisonTask, Document, Judgement, Rater
from tests.conftest import TLDR

runner = CliRunner()


def calibra(*args: str) -> tuple[int, str]:
    result = runner.invoke(cli, list(args))
    return result.exit_code, result.output + (result.stderr if result.stderr_bytes else "")


def status() -> dict[str, int]:
    code, out = calibra("status", "--json")
    assert code == 0, out
    return json.loads(out)


def head(src: Path, n: int, dest: Path) -> Path:
    dest.write_text("".join(src.open().readlines()[:n]))
    return dest


def test_tldr_posts_with_references(env: Path, ctx) -> None:  # type: ignore[no-untyped-def]
    code, out = calibra("import", "documents", str(TLDR / "posts_test400.jsonl"), "--json")
    assert code == 0, out
    assert json.loads(out)["documents_added"] == 400
    with ctx.transaction() as db:
        doc = db.scalar(select(Document).where(Document.external_id == "t3_24xg7m"))
        assert doc.subreddit == "self" and doc.title.startswith("How can I convince my BF")
        assert doc.reference_summary and doc.text.startswith("Hey /r/self!")
    code, out = calibra("import", "documents", str(TLDR / "posts_test400.jsonl"), "--json")
    assert json.loads(out)["documents_added"] == 0 and status()["documents"] == 400


def test_pairs_become_tasks_with_judgements(env: Path, ctx) -> None:  # type: ignore[no-untyped-def]
    rows = [json.loads(line) for line in (TLDR / "pairs_train.jsonl").open().readlines()[:40]]
    path = head(TLDR / "pairs_train.jsonl", 40, env / "pairs.jsonl")
    code, out = calibra("import", "documents", str(path), "--json")
    assert code == 0, out
    report = json.loads(out)
    assert report["layout"] == "pairs" and report["judgements_added"] == 40 and report["tasks_added"] == 40
    with ctx.transaction() as db:
        for row in rows[:5]:
            chosen, rejected = (db.scalar(select(Candidate.id).where(
                                    Candidate.text == row[k].removeprefix("TL;DR:").strip()))
                                for k in ("chosen", "rejected"))
            tasks = [t for t in db.scalars(select(ComparisonTask)) if set(t.candidate_ids) == {chosen, rejected}]
            assert len(tasks) == 1
            (judgement,) = db.scalars(select(Judgement).where(Judgement.task_id == tasks[0].id))
            assert judgement.best_candidate_id == chosen
            # imported tasks are complete: never served to annotators
            assert tasks[0].judgement_count >= tasks[0].replication_target
        doc = db.scalar(select(Document).where(Document.text == rows[0]["prompt"].split("POST:", 1)[1].strip()))
        assert doc.subreddit == "relationships" and doc.title.startswith("Me [19 M]")
    assert calibra("import", "documents", str(path), "--json")[1].count('"judgements_added": 0') == 1


def test_rated_comparisons_keep_rater_ids(env: Path, ctx) -> None:  # type: ignore[no-untyped-def]
    path = head(TLDR / "comparisons_axis_valid.jsonl", 30, env / "cmp.jsonl")
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    code, out = calibra("import", "documents", str(path), "--json")
    assert code == 0, out
    assert json.loads(out)["layout"] == "comparisons"
    with ctx.transaction() as db:
        workers = set(db.scalars(select(Rater.name)))
        assert {r["worker"] for r in rows} <= workers
        r0 = rows[0]
        best = r0[f"summary_{r0['choice']}"].strip()
        j = db.scalar(select(Judgement).join(Rater, Judgement.rater_id == Rater.id)
                      .join(Candidate, Judgement.best_candidate_id == Candidate.id)
                      .where(Rater.name == r0["worker"], Candidate.text == best))
        assert j is not None
        shown = db.get(Assignment, j.assignment_id).display_order
        assert [db.get(Candidate, i).text for i in shown] == [r0["summary_0"].strip(), r0["summary_1"].strip()]
        cand = db.get(Candidate, shown[0])
        assert cand.meta["axis"]["overall_ratings"] == r0["axis_0"]["overall_ratings"]


def test_csv_and_parquet_with_a_field_mapping(env: Path) -> None:
    frame = pd.DataFrame({"uid": ["a1", "a2"], "headline": ["First", "Second"],
                          "body": ["The first body text.", "The second body text."], "tldr": ["one", "two"]})
    frame.to_csv(env / "docs.csv", index=False)
    frame.assign(body=frame.body + " (parquet)", uid=["p1", "p2"]).to_parquet(env / "docs.parquet")
    mapping = ["--text-field", "body", "--title-field", "headline", "--id-field", "uid", "--reference-field", "tldr"]
    for name in ("docs.csv", "docs.parquet"):
        code, out = calibra("import", "documents", str(env / name), *mapping, "--json")
        assert code == 0, out
        assert json.loads(out)["documents_added"] == 2
    assert status()["documents"] == 4


BAD_FILES = {
    "malformed.jsonl": ('{"text": "fine"}\n{"text": "broken"\n', ":2:", "malformed JSON"),
    "missing.jsonl": ('{"text": "fine"}\n{"title": "no text"}\n', ":2: field 'text'", "missing"),
    "empty.jsonl": ('{"text": "fine"}\n{"text": "   "}\n', ":2: field 'text'", "empty"),
    "long.jsonl": ('{"text": "fine"}\n{"text": "' + "x" * 60 + '"}\n', ":2: field 'text'", "limit is 50"),
    "wrong.txt": ("text\n", "wrong.txt", "unsupported file type"),
    "binary.parquet": ("not parquet at all", "binary.parquet", "not a readable Parquet file"),
    "badpair.jsonl": ('{"prompt": "SUBREDDIT: r/a TITLE: t POST: p", "chosen": "TL;DR: x", "rejected": "TL;DR:"}\n',
                      ":1: field 'rejected'", "empty"),
    "badrating.jsonl": ('{"post_id": "p1", "summary": "s", "worker": "w", "overall": 9}\n', ":1: field 'overall'",
                        "1 to 7"),
    "badchoice.jsonl": ('{"post": "p", "summary_0": "a", "summary_1": "b", "choice": 2, "worker": "w"}\n',
                        ":1: field 'choice'", "0 or 1"),
    "nul.jsonl": ('{"text": "fine"}\n{"text": "a\\u0000b"}\n', ":2: field 'text'", "control character"),
    "sameid.jsonl": ('{"id": "a", "text": "one"}\n{"id": "a", "text": "two"}\n', ":2: field 'id'",
                     "also the id of line 1"),
    "latin1.csv": (b"id,text\na,fine\nb,caf\xe9\n", ":3: field 'text'", "not UTF-8"),
}


@pytest.mark.parametrize("name", sorted(BAD_FILES))
def test_bad_input_is_refused_whole_and_named(env: Path, monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    monkeypatch.setenv("CALIBRA_MAX_DOCUMENT_CHARS", "50")
    content, where, what = BAD_FILES[name]
    if isinstance(content, bytes):
        (env / name).write_bytes(content)
    else:
        (env / name).write_text(content)
    before = status()
    code, out = calibra("import", "documents", str(env / name))
    assert code == 2
    assert where in out and what in out and name in out
    assert status() == before  # the good first line was not stored either


def test_a_hub_split_is_imported_whole_or_not_at_all(env: Path, ctx) -> None:  # type: ignore[no-untyped-def]
    """What `import documents --hf` does with the files of a split it fetched: one bad record in
    the third file stores nothing, not even the first two files."""
    files = [env / f"train-0000{i}-of-00003.parquet" for i in range(3)]
    for i, path in enumerate(files):
        pd.DataFrame({"id": [f"{i}-{j}" for j in range(3)], "text": [f"Post {j} of file {i}." for j in range(3)]}
                     ).to_parquet(path)
    good_third = files[2].read_bytes()
    pd.DataFrame({"id": ["2-0", "2-1"], "text": ["A fine post.", None]}).to_parquet(files[2])

    def import_split() -> dict[str, object]:  # the arguments app.cli's import_documents gives with --hf
        return import_files(ctx.transaction, files, source="org/dataset", split="train",
                            max_chars=ctx.settings.max_document_chars)

    with pytest.raises(InvalidInput) as refused:
        import_split()
    assert str(refused.value) == f"{files[2]}:2: field 'text': missing required field"
    assert status()["documents"] == 0
    files[2].write_bytes(good_third)
    assert import_split()["documents_added"] == 9
    with ctx.transaction() as db:
        assert set(db.execute(select(Document.source, Document.split))) == {("org/dataset", "train")}


def test_hub_dataset_fails_clearly_without_the_hub(env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import huggingface_hub.constants as constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    code, out = calibra("import", "documents", "--hf", "CarperAI/openai_summarize_tldr", "--split", "valid")
    assert code == 2
    assert "cannot fetch dataset 'CarperAI/openai_summarize_tldr' (split 'valid')" in out


def test_hub_dataset_on_a_network_without_the_hub(env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import huggingface_hub.constants as constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    code, out = calibra("import", "documents", "--hf", "CarperAI/openai_summarize_tldr", "--split", "valid")
    assert code == 2 and "Hugging Face Hub" in out


def test_large_real_pairs_file_imports_in_one_go(env: Path, ctx) -> None:  # type: ignore[no-untyped-def]
    code, out = calibra("import", "documents", str(TLDR / "pairs_train.jsonl"), "--json")
    assert code == 0, out
    assert json.loads(out)["judgements_added"] == 7260
    with ctx.transaction() as db:
        assert db.scalar(select(func.count()).select_from(Document)) == 1203


def test_ratings_make_text_less_documents_that_a_later_post_fills_in(env: Path, ctx) -> None:  # type: ignore[no-untyped-def]
    ratings = [{"post_id": "t3_x", "summary_id": i, "summary": f" summary {i}", "worker": w, "overall": 1 + i,
                "accuracy": 5, "coverage": None, "coherence": 7} for i in range(6) for w in ("w1", "w2")]
    (env / "r.jsonl").write_text("".join(json.dumps(r) + "\n" for r in ratings))
    code, out = calibra("import", "ratings", str(env / "r.jsonl"), "--json")
    assert code == 0, out
    report = json.loads(out)
    # six summaries per rater make two tasks of at most four summaries for each rater
    assert report["layout"] == "ratings" and report["candidates_added"] == 6 and report["judgements_added"] == 4
    with ctx.transaction() as db:
        (doc,) = db.scalars(select(Document)).all()
        assert not doc.has_text and doc.external_id == "t3_x"
        assert all(len(t.slots) <= 4 for t in db.scalars(select(ComparisonTask)))
        scores = sorted((r.quality, r.extra["coherence"]) for j in db.scalars(select(Judgement)) for r in j.ratings)
        assert scores == sorted((1 + i, 7) for i in range(6) for _ in range(2))
    comparison = {"post_id": "t3_x", "post": "The post text at last.", "summary_0": "summary 0",
                  "summary_1": "summary 1", "choice": 1, "worker": "w3"}
    (env / "c.jsonl").write_text(json.dumps(comparison) + "\n")
    code, out = calibra("import", "documents", str(env / "c.jsonl"), "--json")
    assert json.loads(out)["documents_added"] == 0 and json.loads(out)["candidates_added"] == 0
    with ctx.transaction() as db:
        (doc,) = db.scalars(select(Document)).all()
        assert doc.has_text and doc.text == "The post text at last."


@pytest.mark.postgres
def test_an_import_leaves_postgresql_planning_with_the_new_rows(env: Path, pg_database: str,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """Without fresh statistics PostgreSQL takes just-filled tables for empty ones and plans the
    next-task query as nested table scans: half a second per request on 3,000 tasks."""
    from app.context import open_context

    monkeypatch.setenv("CALIBRA_DATABASE_URL", pg_database)
    ctx = open_context()
    code, _ = calibra("import", "documents", str(TLDR / "comparisons_axis_valid.jsonl"), "--json")
    assert code == 0
    with ctx.reading() as db:
        for table, model in (("document", Document), ("comparison_task", ComparisonTask)):
            rows = db.scalar(select(func.count()).select_from(model))
            planned = db.scalar(text("SELECT reltuples FROM pg_class WHERE relname = :t"), {"t": table})
            assert rows and planned == rows, (table, planned, rows)
