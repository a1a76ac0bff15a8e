"""`calibra demo seed` killed at any stage, then run again, ends as one uninterrupted run would."""
from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from sqlalchemy import func, select

from app.cli import DEMO_USERS
from db.models import Candidate, ComparisonTask, Document, Judgement, ModelKind, ModelVersion, Rater
from training.registry import activate

SEED = [sys.executable, "-m", "app.cli", "demo", "seed"]
POSTS = 30  # app/demo/posts.jsonl


def _state(ctx) -> tuple[int, int, dict[int, int], list[str], int]:  # type: ignore[no-untyped-def]
    """Documents, candidates, annotators' tasks per document, logins, and simulated judgements."""
    with ctx.reading() as db:
        return (db.scalar(select(func.count(Document.id))) or 0, db.scalar(select(func.count(Candidate.id))) or 0,
                dict(Counter(db.scalars(select(ComparisonTask.document_id).where(ComparisonTask.batch == "demo")))),
                sorted(db.scalars(select(Rater.name).where(Rater.password_hash.is_not(None)))),
                db.scalar(select(func.count(Judgement.id)).join(Rater).where(Rater.simulated.is_(True))) or 0)


def _kill_when(ctx, stage: str) -> None:  # type: ignore[no-untyped-def]
    seed = subprocess.Popen(SEED, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and seed.poll() is None:
        documents, candidates, _, _, _ = _state(ctx)
        if (stage == "imported" and documents) or (stage == "sampling" and candidates):
            seed.send_signal(signal.SIGKILL)
            seed.wait()
            return
        time.sleep(0.02)
    pytest.fail(f"the seed finished before it reached '{stage}'")


@pytest.mark.parametrize("stage", ["imported", "sampling"])
def test_an_interrupted_demo_seed_goes_on_where_it_stopped(env: Path, ctx, tiny_lm: Path, stage: str) -> None:  # type: ignore[no-untyped-def]
    with ctx.transaction() as db:  # a tiny policy, so sampling takes seconds
        tiny = ModelVersion(kind=ModelKind.POLICY, name="tiny", base_model=str(tiny_lm), round=0)
        db.add(tiny)
        db.flush()
        activate(db, tiny)
    _kill_when(ctx, stage)
    interrupted = _state(ctx)
    assert interrupted[2] == {} and interrupted[3] == [] and interrupted[4] == 0  # before tasks, logins, history
    resumed = subprocess.run(SEED, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    documents, candidates, tasks, logins, simulated = _state(ctx)
    assert documents == POSTS and logins == sorted(DEMO_USERS)
    assert len(tasks) == POSTS and set(tasks.values()) == {1}  # every post in exactly one annotators' task
    assert simulated == 15 * 3  # the simulated history: 15 pair tasks, 3 simulated raters each
    with ctx.reading() as db:  # which leave no task open to a person
        history = db.scalars(select(ComparisonTask).where(ComparisonTask.batch == "simulated-history")).all()
        assert len(history) == 15 and all(t.judgement_count == t.replication_target == 3 for t in history)
    with ctx.reading() as db:
        per_post = Counter(db.scalars(select(Candidate.document_id).where(Candidate.model_version_id.is_not(None))))
    assert max(per_post.values()) <= 3  # resumed posts were not sampled twice
    done = subprocess.run(SEED, check=True, capture_output=True, text=True)
    assert _state(ctx) == (documents, candidates, tasks, logins, simulated)
    assert "candidates from" not in done.stdout and "simulated history" not in done.stdout


@pytest.mark.slow
def test_the_demo_shows_the_default_policys_summaries_not_restatements(env: Path, ctx) -> None:  # type: ignore[no-untyped-def]
    from annotate.export import repeats_layout

    done = subprocess.run(SEED, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    with ctx.reading() as db:
        sampled = db.scalars(select(Candidate.text).where(Candidate.model_version_id.is_not(None))).all()
        tasked = db.scalar(select(func.count(func.distinct(ComparisonTask.document_id)))
                           .where(ComparisonTask.batch == "demo"))
    dropped = int(done.stdout.split(" samples that restated")[0].rsplit("(", 1)[1])
    assert dropped <= 0.05 * (len(sampled) + dropped), done.stdout  # under 5% of the policy's samples
    assert not any(map(repeats_layout, sampled)) and tasked == POSTS
