"""The weekly loop on tiny models: round 0 (SFT), then rounds that train on simulated raters'
judgements of the previous round's outputs; a worker killed mid-training; the schedule."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select

from annotate.simulate import SimulationSpec, length_scorer, simulate
from annotate.tasks import create_round_tasks
from db.models import (
    Candidate,
    CandidateOrigin,
    ComparisonTask,
    Document,
    Judgement,
    ModelKind,
    ModelStatus,
    ModelVersion,
    Rater,
    RegistryEvent,
    RoundStatus,
    StageStatus,
    TaskCandidate,
    TrainingRound,
    digest,
)
from training.errors import UsageError
from training.registry import rollback
from training.rounds.config import RoundOptions
from training.rounds.gate import decide
from training.rounds.hacking import check_round, open_alarms
from training.rounds.overview import history, trends
from training.rounds.schedule import parse_schedule
from training.rounds.store import cancel_round, claim_next, find_round, recover_stale, request_round, round_payload
from training.worker import Worker


def _tiny_options(tiny_encoder: Path, **changes: object) -> RoundOptions:
    return replace(RoundOptions(
        eval_docs=3, batch_docs=5, sft_docs=6, per_doc=3, include_simulated=True,
        judge_settings={"backbone": str(tiny_encoder), "max_length": 96, "batch_texts": 8},
        slic_settings={"lora_r": 4, "batch_size": 2, "learning_rate": 1e-3, "max_target_tokens": 16,
                       "max_prompt_tokens": 64}), **changes)


@pytest.fixture
def loop(loop_ready):  # type: ignore[no-untyped-def]
    """A worker with a low judgement bar over posts with references and a tiny active policy."""
    ctx = loop_ready
    settings = replace(ctx.loop_settings(), min_judgements=10)
    return ctx, Worker(ctx.transaction, ctx.engine, settings, create_round_tasks, poll_s=0.2, heartbeat_s=0.2)


def _run(ctx, worker: Worker, options: RoundOptions) -> dict:  # type: ignore[no-untyped-def]
    with ctx.transaction() as db:
        number = request_round(db, options, "test").number
    assert worker.run_once() is not None
    with ctx.transaction() as db:
        return round_payload(find_round(db, number))


def _stage(payload: dict, name: str) -> dict:  # type: ignore[type-arg]
    return next(s for s in payload["stages"] if s["name"] == name)


def test_round_zero_then_two_rounds_on_simulated_judgements(loop, tiny_encoder: Path) -> None:  # type: ignore[no-untyped-def]
    ctx, worker = loop
    first = _run(ctx, worker, _tiny_options(tiny_encoder))
    assert first["round"] == 0 and first["status"] == "succeeded", first
    assert [s["name"] for s in first["stages"]] == ["sft", "evaluate", "next_batch"]
    evaluation = _stage(first, "evaluate")["metrics"]["summary"]
    assert set(evaluation["rouge_l"]) == {"new", "previous", "lead"} and evaluation["documents"] == 3
    assert first["decision"]["judge"] == "rouge_l"  # no judge exists before any judgement
    batch = _stage(first, "next_batch")["metrics"]
    assert batch["round"] == 1 and batch["tasks"] >= 1

    with ctx.transaction() as db:  # nothing judged yet: a round is skipped, with the reason
        number = request_round(db, _tiny_options(tiny_encoder), "test").number
    assert worker.run_once() == RoundStatus.SKIPPED
    with ctx.transaction() as db:
        skipped = find_round(db, number)
        assert "0 new judgement(s)" in skipped.reason and skipped.snapshot is None

    assert sum(simulate(ctx.transaction, SimulationSpec(raters=3, round=1), length_scorer).values()) >= 10
    with ctx.transaction() as db:  # simulated judgements are marked, and stay out of a plain round
        assert db.scalar(select(func.count(Rater.id)).where(Rater.simulated.is_(True))) == 3
    second = _run(ctx, worker, _tiny_options(tiny_encoder))
    assert second["status"] == "succeeded", second
    assert [s["name"] for s in second["stages"]] == ["snapshot", "judges", "policy", "evaluate", "next_batch"]
    judges = _stage(second, "judges")["metrics"]["reward"]
    assert judges["used"] and judges["current"] is None and 0 <= judges["newest_batch_accuracy"] <= 1
    assert second["decision"]["judge"] == "reward" and "judge_accuracy" in second["decision"]

    simulate(ctx.transaction, SimulationSpec(raters=3, round=second["round"] + 1, label="again"), length_scorer)
    third = _run(ctx, worker, _tiny_options(tiny_encoder, next_batch_selection="uncertainty"))
    assert third["status"] == "succeeded", third
    assert _stage(second, "next_batch")["metrics"]["selection"] == "random"
    picked = _stage(third, "next_batch")["metrics"]
    assert picked["selection"] == "uncertainty" and picked["tasks"] == 5  # batch_docs, from a pool twice that
    with ctx.transaction() as db:  # what the Training tab shows of these rounds
        shown = trends(db)
        newest = [r["round"] for r in shown["judge_accuracy"] if r["test set"] == "newest batch"]
        assert newest == [second["round"], third["round"]]
        assert {r["comparison"] for r in shown["win_rate"]} >= {"new vs previous", "new vs reference"}
        assert all(r["low"] <= r["win_rate"] <= r["high"] for r in shown["win_rate"])
        assert [r["round"] for r in history(db)] == [third["round"], second["round"], 1, 0]
    with ctx.transaction() as db:  # the pair the judge was least sure of, alone
        pair_tasks = list(db.scalars(select(ComparisonTask).where(ComparisonTask.round == third["round"] + 1)))
        assert len(pair_tasks) == 5 and all(len(t.slots) == 2 for t in pair_tasks)
    # the third round trains on judgements of the second round's outputs, and only those
    assert third["snapshot"]["judgement_id_min"] > second["snapshot"]["judgement_id_max"]
    with ctx.transaction() as db:
        judged_rounds = set(db.scalars(select(ComparisonTask.round)
                                       .join(Judgement, Judgement.task_id == ComparisonTask.id)
                                       .where(Judgement.id >= third["snapshot"]["judgement_id_min"])))
        assert judged_rounds == {second["round"] + 1}
        reward = _stage(third, "judges")["metrics"]["reward"]
        assert reward["current"] == f"reward-r{second['round']}" and str(second["round"]) in reward["earlier_test_sets"]
        new = db.scalar(select(ModelVersion).where(ModelVersion.name == f"policy-r{third['round']}"))
        assert new.round == third["round"] and new.parent is not None and new.parent.kind == ModelKind.POLICY
        for version in db.scalars(select(ModelVersion).where(ModelVersion.artifact_path.is_not(None))):
            assert Path(version.artifact_path).is_dir(), version.name  # no version points at a missing artifact
        events = list(db.scalars(select(RegistryEvent)))
        assert all(e.actor.startswith("round ") for e in events)
        active = db.scalar(select(ModelVersion).where(ModelVersion.kind == ModelKind.POLICY,
                                                      ModelVersion.status == ModelStatus.ACTIVE))
        if events:  # a promotion can be rolled back by hand, recorded with who did it
            event = rollback(db, "cli:tester")
            assert event.previous_id == active.id and event.actor == "cli:tester"


def test_one_round_at_a_time_and_cancellation(loop, tiny_encoder: Path) -> None:  # type: ignore[no-untyped-def]
    ctx, worker = loop
    with ctx.transaction() as db:
        number = request_round(db, _tiny_options(tiny_encoder), "test").number
        with pytest.raises(UsageError, match="requested already"):
            request_round(db, _tiny_options(tiny_encoder), "test")
    with ctx.transaction() as db:
        assert claim_next(db, "w1") is not None
    with ctx.transaction() as db:
        assert claim_next(db, "w2") is None  # nothing else is requested, and one is running
        cancel_round(db, number)
    with ctx.transaction() as db:
        assert find_round(db, number).cancel_requested
        # w1 never beats: its round goes back to the queue, resumes, and is cancelled there
        assert recover_stale(db, timedelta(seconds=0)) == [(number, "cancelled")]
        assert find_round(db, number).status == RoundStatus.CANCELLED


def test_a_worker_killed_while_training_resumes_the_round(loop, env: Path, tiny_encoder: Path) -> None:  # type: ignore[no-untyped-def]
    ctx, _ = loop
    options = _tiny_options(tiny_encoder, slic_settings={"lora_r": 4, "batch_size": 2, "learning_rate": 1e-3,
                                                         "max_target_tokens": 16, "max_prompt_tokens": 64,
                                                         "epochs": 150, "checkpoint_every": 50})
    with ctx.transaction() as db:
        number = request_round(db, options, "test").number
        versions_before = db.scalar(select(func.count(ModelVersion.id)))
    environ = {**os.environ, "CALIBRA_ROUND_MIN_JUDGEMENTS": "10"}
    worker = subprocess.Popen([sys.executable, "-m", "app.cli", "worker", "--poll", "0.2"], env=environ,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:  # wait until the SFT stage has taken optimizer steps
            with ctx.transaction() as db:
                stage = next((s for s in find_round(db, number).stages if s.name == "sft"), None)
                if stage is not None and (stage.progress or {}).get("step", 0) >= 60:
                    break
            time.sleep(0.2)
        else:
            pytest.fail("the worker did not start training in time")
    finally:
        worker.send_signal(signal.SIGKILL)
        worker.wait()
    with ctx.transaction() as db:
        killed = find_round(db, number)
        assert killed.status == RoundStatus.RUNNING  # as the dead worker left it
        assert db.scalar(select(func.count(ModelVersion.id))) == versions_before  # nothing registered half-done
        assert db.scalar(select(ModelVersion).where(ModelVersion.status == ModelStatus.ACTIVE,
                                                    ModelVersion.kind == ModelKind.POLICY)).name == "tiny"
    restarted = subprocess.run([sys.executable, "-m", "app.cli", "worker", "--once"], env=environ,
                               capture_output=True, text=True, timeout=600)
    assert restarted.returncode == 0, restarted.stderr[-2000:]
    with ctx.transaction() as db:
        done = find_round(db, number)
        assert done.status == RoundStatus.SUCCEEDED and done.attempts == 2, done.reason
        sft = next(s for s in done.stages if s.name == "sft")
        assert sft.status == StageStatus.DONE
        (version,) = db.scalars(select(ModelVersion).where(ModelVersion.name == "policy-sft"))
        assert Path(version.artifact_path, "adapter_config.json").exists()


def test_the_schedule_is_a_spec_people_write() -> None:
    assert str(parse_schedule("mon 02:00")) == "cron[day_of_week='mon', hour='2', minute='0']"
    assert parse_schedule("daily 23:59") is not None and parse_schedule(" OFF ") is None
    for bad in ("monday 2am", "mon 24:00", "every week"):
        with pytest.raises(UsageError, match="DAY HH:MM"):
            parse_schedule(bad)


def test_round_commands(env: Path, ctx) -> None:  # type: ignore[no-untyped-def]
    from typer.testing import CliRunner

    from app.cli import cli

    run = CliRunner().invoke
    assert "no rounds yet" in run(cli, ["round", "list"]).output
    requested = run(cli, ["round", "run", "--judge", "ranker", "--docs", "4", "--json"])
    assert requested.exit_code == 0, requested.output
    assert json.loads(requested.stdout)["options"]["judge"] == "ranker"
    again = run(cli, ["round", "run"])
    assert again.exit_code == 2 and "round 0 is requested already" in again.output
    assert run(cli, ["round", "run", "--judge", "nobody"]).exit_code == 2
    shown = json.loads(run(cli, ["round", "show", "0", "--json"]).stdout)
    assert shown["status"] == "requested" and shown["stages"] == []
    assert "cancelled" in run(cli, ["round", "cancel", "0"]).output
    assert json.loads(run(cli, ["round", "list", "--json"]).stdout)[0]["status"] == "cancelled"
    assert run(cli, ["round", "schedule", "fri 18:30"]).exit_code == 0
    bad = run(cli, ["round", "schedule", "sometimes"])
    assert bad.exit_code == 2 and "DAY HH:MM" in bad.output
    with ctx.transaction() as db:
        assert db.scalar(select(func.count(TrainingRound.id))) == 1


def _promoted_round_with_batch(ctx, number: int, docs: int = 12) -> None:  # type: ignore[no-untyped-def]
    """A round that promoted `new` over `old` and sent both policies' summaries of fresh posts to
    annotators: the new policy's long, the old one's short, the reference in between."""
    with ctx.transaction() as db:
        new, old = (ModelVersion(kind=ModelKind.POLICY, name=n, base_model="x") for n in ("new", "old"))
        promoted = TrainingRound(number=number, status=RoundStatus.SUCCEEDED, options={}, requested_by="test",
                                 decision={"promote": True, "new": "new", "current": "old"})
        db.add_all([new, old, promoted])
        for i in range(docs):
            text = f"Post {i}: my neighbour's dog barks all night and I cannot sleep."
            doc = Document(source="test", title=f"Dog {i}", text=text, content_hash=digest(text))
            texts = [(f"The dog barks all night, every night, and the neighbour will not listen {i}", new),
                     (f"Dog barks {i}", old), (f"A barking dog keeps me up {i}", None)]
            cands = [Candidate(document=doc, text=t, text_hash=digest(t), model_version=v,
                               origin=CandidateOrigin.MODEL if v else CandidateOrigin.REFERENCE) for t, v in texts]
            db.add(ComparisonTask(document=doc, replication_target=3, round=number + 1,
                                  slots=[TaskCandidate(candidate=c, slot=j) for j, c in enumerate(cands)]))


def _shorter(post: str, texts: list[str]) -> list[float]:
    return [-float(len(t.split())) for t in texts]


@pytest.mark.parametrize(("judge", "alarm"), [(length_scorer, True), (_shorter, False)])
def test_reward_hacking_alarm(ctx, judge, alarm: bool) -> None:  # type: ignore[no-untyped-def]
    from typer.testing import CliRunner

    from app.cli import cli

    _promoted_round_with_batch(ctx, 1)
    # the annotators (simulated) prefer the shortest summary: the old policy's
    simulate(ctx.transaction, SimulationSpec(raters=3, round=2, label="short"), _shorter)
    result = check_round(ctx.transaction, 1, judge, "a judge", 0.1, include_simulated=True)
    assert result is not None and result["human"] == 0.0 and result["verdicts"] == 36 and result["pairs"] == 12
    assert result["alarm"] is alarm and result["predicted"] == (1.0 if alarm else 0.0)
    with ctx.transaction() as db:
        assert open_alarms(db) == ([1] if alarm else [])
    assert check_round(ctx.transaction, 1, judge, "a judge", 0.1, include_simulated=False) is None  # people only
    shown = json.loads(CliRunner().invoke(cli, ["round", "show", "1", "--json"]).stdout)["reward_hacking"]
    assert {k: shown[k] for k in ("alarm", "human", "gap")} == {"alarm": alarm, "human": 0.0,
                                                                "gap": result["predicted"]}
    summary = {"reward_new_vs_previous_win_rate": 0.9, "length_change": 0.0, "repeats_layout": {}}
    with ctx.transaction() as db:
        blocked = decide(summary, "reward", 0.6, min_win_rate=0.55, max_length_growth=0.2, alarms=open_alarms(db))
    assert blocked.promote is not alarm
    if alarm:  # an admin acknowledges it, and promotion may go on
        assert "round 1 is not acknowledged" in blocked.reasons[0]
        done = CliRunner().invoke(cli, ["round", "acknowledge", "1"])
        assert done.exit_code == 0, done.output
        with ctx.transaction() as db:
            assert open_alarms(db) == []
            assert find_round(db, 1).decision["reward_hacking"]["acknowledged_by"].startswith("cli:")
    else:
        refused = CliRunner().invoke(cli, ["round", "acknowledge", "1"])
        assert refused.exit_code == 2 and "no reward-hacking alarm" in refused.output


def _prefers_longer(comparisons):  # type: ignore[no-untyped-def]
    return [0.9 if len(a) > len(b) else 0.1 for _, a, b in comparisons]


def test_disagreements_go_to_review(ctx) -> None:  # type: ignore[no-untyped-def]
    from annotate.errors import InvalidInput
    from annotate.review import rater_notes, review_items, settle
    from training.rounds.review import find_disagreements, review_counts

    _promoted_round_with_batch(ctx, 1, docs=4)
    simulate(ctx.transaction, SimulationSpec(raters=3, round=2, label="short"), _shorter)  # all pick the shortest
    with ctx.transaction() as db:
        upto = db.scalar(select(func.max(Judgement.id)))
    agreeing = find_disagreements(ctx.transaction, "agrees", lambda cs: [1 - p for p in _prefers_longer(cs)],
                                  round_=1, after=None, upto=upto, include_simulated=True)
    assert agreeing == 0
    assert find_disagreements(ctx.transaction, "longer", _prefers_longer, round_=1, after=None, upto=upto,
                              include_simulated=False) == 0  # simulated raters only count when asked
    added = find_disagreements(ctx.transaction, "longer", _prefers_longer, round_=1, after=None, upto=upto,
                               include_simulated=True)
    assert added == 4  # and a second look adds nothing new
    assert find_disagreements(ctx.transaction, "longer", _prefers_longer, round_=1, after=None, upto=upto,
                              include_simulated=True) == 0
    with ctx.transaction() as db:
        items = review_items(db)
        assert len(items) == 4 and all(i["confidence"] == 0.9 for i in items)
        first = items[0]
        humans = next(s for s in first["summaries"] if s["humans_choice"])
        judges = next(s for s in first["summaries"] if s["judges_choice"])
        assert humans["votes"] == 3 and humans["text"].startswith("Dog barks") and judges["text"].startswith("The dog")
        settle(db, items[0]["id"], "humans_right", "web:boss")
        settle(db, items[1]["id"], "judge_right", "web:boss")
        settle(db, items[2]["id"], "unclear", "web:boss")
        with pytest.raises(InvalidInput, match="settled already") as refused:
            settle(db, items[0]["id"], "unclear", "web:boss")
        assert refused.value.field == "item"
        with pytest.raises(InvalidInput) as bad:
            settle(db, items[3]["id"], "maybe", "web:boss")
        assert bad.value.field == "verdict"
    with ctx.transaction() as db:
        assert db.get(ComparisonTask, items[0]["task_id"]).gold_candidate_id == humans["candidate_id"]
        assert rater_notes(db) == {"sim-short-1": 1, "sim-short-2": 1, "sim-short-3": 1}
        assert review_counts(db) == {1: {"open": 1, "humans_right": 1, "judge_right": 1, "unclear": 1}}
        assert history(db)[0]["disagreement_reviews"] == "1 humans right, 1 judge right, 1 open, 1 unclear"


def test_uncertainty_picks_the_closest_calls() -> None:
    from training.rounds.selection import most_uncertain, random_documents, uncertain_pairs

    assert most_uncertain([0.9, 0.45, 0.5, 0.2, 0.55], 3) == [2, 1, 4]
    assert random_documents([5, 6, 7, 8], 2, seed=1) == random_documents([5, 6, 7, 8], 2, seed=1)
    assert random_documents([5, 6], 9, seed=1) == [5, 6]
    # the judge's P(a > b) is the share of a's length in the pair: equal lengths are a coin toss
    candidates = {1: [(10, "a b c"), (11, "a b c d e f"), (12, "x y z")], 2: [(20, "a"), (21, "a b c d")],
                  3: [(30, "a b"), (31, "a b c")]}
    posts = dict.fromkeys(candidates, "post")

    def prefer(comparisons):  # type: ignore[no-untyped-def]
        return [len(a.split()) / (len(a.split()) + len(b.split())) for _, a, b in comparisons]

    assert uncertain_pairs(posts, candidates, prefer, 2) == {1: (10, 12), 3: (30, 31)}


@pytest.mark.skipif(sys.platform != "linux", reason="the kernel's parent-death signal is Linux's")
def test_the_worker_beside_the_app_stops_with_it(env: Path, ctx) -> None:  # type: ignore[no-untyped-def]
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    app = subprocess.Popen([sys.executable, "-m", "app.cli", "serve", "--port", str(port)],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    children = Path(f"/proc/{app.pid}/task/{app.pid}/children")
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not children.read_text().split():
            time.sleep(0.2)
        (worker,) = map(int, children.read_text().split())
        assert "worker" in Path(f"/proc/{worker}/cmdline").read_text()
    finally:
        app.send_signal(signal.SIGKILL)  # no chance to clean up: the kernel tells the worker
        app.wait()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and Path(f"/proc/{worker}").exists():
        state = Path(f"/proc/{worker}/stat").read_text().split()[2] if Path(f"/proc/{worker}").exists() else "X"
        if state == "Z":  # gone, only not yet reaped by its new parent
            break
        time.sleep(0.2)
    else:
        assert not Path(f"/proc/{worker}").exists(), "the worker outlived the app"
