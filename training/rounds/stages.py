"""The stages of a round, each a function of the round's context that returns its metrics.

A stage reads what earlier stages recorded (their metrics in the database, their files in the
round's folder) and nothing else, so a round resumed by another worker continues from its last
finished stage. Model versions are registered only once their artifact is complete (the
trainers write artifacts whole or not at all), so a failed stage never leaves a version pointing
at half a model; the active policy changes only in `evaluate`, after the gate.
"""
from __future__ import annotations

import json
import random
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from annotate.export import ExportConfig, Filters, format_post, preference_pairs, write_table
from db.engine import Transactions
from db.models import (
    Candidate,
    ComparisonTask,
    Document,
    Judgement,
    ModelKind,
    ModelVersion,
    Rater,
    RoundStage,
    RoundStatus,
    StageStatus,
    TaskCandidate,
    TrainingRound,
)
from training.artifacts import fingerprint
from training.candidates import generate_candidates
from training.errors import UsageError
from training.generation import SamplingConfig
from training.judges.jobs import JudgeTrainSpec, evaluate_file, judge_scorer, load_version, train_and_register
from training.judges.pairs import PreferencePair, read_pairs, split_by_document
from training.registry import activate, active_judge, active_policy, find_version, promote
from training.rounds.config import LoopSettings, RoundOptions
from training.rounds.gate import decide, gate_judge
from training.rounds.hacking import check_round, open_alarms, round_versions
from training.rounds.review import find_disagreements
from training.rounds.selection import POOL_FACTOR, random_documents, uncertain_pairs
from training.slic.config import RoundSampling
from training.slic.data import direct_documents
from training.slic.jobs import evaluate, sample_rank, train
from training.slic.jobs import sft as slic_sft
from training.slic.round import RoundFiles


class Skip(Exception):
    """The stage (or the whole round, from `snapshot`) has nothing to do; the reason is recorded."""


class Cancelled(Exception):
    pass


class TaskMaker(Protocol):
    """Creates the comparison tasks of the next batch (the annotation side's `create_tasks`):
    passed in by the app, so that training does not depend on how tasks are built."""

    def __call__(self, db: Session, document_ids: list[int], round_: int, replication: int,
                 pairs: dict[int, tuple[int, int]] | None = None) -> int: ...


@dataclass
class RoundContext:
    tx: Transactions
    settings: LoopSettings
    round_id: int
    number: int
    options: RoundOptions
    make_tasks: TaskMaker
    on_step: Callable[[int, int, float], bool]  # live progress; True: cancelled
    log: Callable[[str], None]

    @property
    def folder(self) -> Path:
        return self.settings.home / "rounds" / f"loop-{self.number}"

    def metrics(self, stage: str) -> dict[str, Any]:
        """What an earlier stage of this round recorded."""
        with self.tx() as db:
            row = db.scalar(select(RoundStage).where(RoundStage.round_id == self.round_id, RoundStage.name == stage))
            return dict(row.metrics or {}) if row is not None and row.status == StageStatus.DONE else {}


def _succeeded_rounds(db: Session, number: int) -> list[TrainingRound]:
    """The rounds before `number` that succeeded. A round that failed (a full disk, say) or was
    cancelled did not finish learning from its judgements: the next round takes them again, and
    the pairs it held out are held out no more."""
    return list(db.scalars(select(TrainingRound).where(TrainingRound.number < number,
                                                      TrainingRound.status == RoundStatus.SUCCEEDED)))


def _previous_snapshot_end(db: Session, number: int) -> int | None:
    """The last judgement id an earlier round trained on."""
    ends = [int(r.snapshot["judgement_id_max"]) for r in _succeeded_rounds(db, number)
            if r.snapshot and r.snapshot.get("judgement_id_max")]
    return max(ends) if ends else None


def snapshot(ctx: RoundContext) -> dict[str, Any]:
    """The judgements since the last succeeded round's snapshot, exported as preference pairs: the
    judges' training pairs (earlier rounds too with `pool`) and the newest batch's held-out
    documents (Llama 2 tests a judge on the batch it will judge next)."""
    opts = ctx.options
    if ctx.number > 0:
        _check_reward_hacking(ctx, ctx.number - 1)
    with ctx.tx() as db:
        after = _previous_snapshot_end(db, ctx.number)
        new = select(func.min(Judgement.id), func.max(Judgement.id), func.count(Judgement.id)).join(
            Rater, Rater.id == Judgement.rater_id)
        if after is not None:
            new = new.where(Judgement.id > after)
        if not opts.include_simulated:
            new = new.where(Rater.simulated.is_(False))
        first, last, count = db.execute(new).one()
        if count < ctx.settings.min_judgements:
            raise Skip(f"{count} new judgement(s) since the previous round's snapshot; round_min_judgements is "
                       f"{ctx.settings.min_judgements}")
        batch, left_out = preference_pairs(db, ExportConfig(), Filters(after_judgement=after, upto_judgement=last,
                                                                       include_simulated=opts.include_simulated))
        earlier = None
        if opts.pool and after is not None:
            earlier, _ = preference_pairs(db, ExportConfig(), Filters(upto_judgement=after,
                                                                      include_simulated=opts.include_simulated))
    if batch.empty:
        raise Skip(f"{count} new judgements give no preference pairs (ties, gold tasks or all unacceptable)")
    ctx.folder.mkdir(parents=True, exist_ok=True)
    write_table(batch, ctx.folder / "batch.jsonl", "jsonl")
    pairs = read_pairs(ctx.folder / "batch.jsonl")
    train_pairs, test_pairs = split_by_document(pairs, 0.2, seed=ctx.number) if len({p.key for p in pairs}) > 1 \
        else (pairs, [])
    if earlier is not None and not earlier.empty:
        write_table(earlier, ctx.folder / "earlier.jsonl", "jsonl")
        train_pairs = [*read_pairs(ctx.folder / "earlier.jsonl"), *train_pairs]
    _write_pairs(ctx.folder / "judge_train.jsonl", train_pairs)
    _write_pairs(ctx.folder / "judge_test.jsonl", test_pairs)
    snap = {"judgement_id_min": first, "judgement_id_max": last, "judgements": count, "after": after,
            "pairs": len(pairs), "train_pairs": len(train_pairs), "test_pairs": len(test_pairs),
            "pooled": bool(opts.pool and earlier is not None), "left_out": left_out,
            "hash": fingerprint([(p.prompt, p.chosen, p.rejected) for p in pairs]),
            "document_ids": sorted({int(d) for d in batch["document_id"]})}
    with ctx.tx() as db:
        db.get_one(TrainingRound, ctx.round_id).snapshot = snap
    ctx.log(f"{count} new judgements ({first}–{last}), {len(pairs)} pairs: {len(train_pairs)} to train the judges, "
            f"{len(test_pairs)} held out")
    return snap


def _check_reward_hacking(ctx: RoundContext, number: int) -> None:
    """Before learning from the newest judgements: do the people who judged round `number`'s
    outputs agree with the judge that ranked its samples (the active reward model when none
    did, as in round 0)? Recorded on that round; an alarm blocks automatic promotion."""
    with ctx.tx() as db:
        versions = round_versions(db, number)
        if versions is None:
            return
        judge = versions[2] or (v.name if (v := active_judge(db, ModelKind.REWARD)) else None)
    if judge is None:
        return
    result = check_round(ctx.tx, number, judge_scorer(ctx.tx, judge), judge, ctx.settings.hacking_alarm_gap,
                         ctx.options.include_simulated)
    if result is not None:
        ctx.log(f"round {number}: {judge} predicted a win rate of {result['predicted']:.2f} for the new policy, "
                f"the annotators gave {result['human']:.2f} ({result['verdicts']} verdicts)"
                + ("; REWARD-HACKING ALARM" if result["alarm"] else ""))


def _write_pairs(path: Path, pairs: list[PreferencePair]) -> None:
    path.write_text("".join(json.dumps({"prompt": p.prompt, "chosen": p.chosen, "rejected": p.rejected,
                                        "margin": p.margin, "weight": p.weight, "round": p.round,
                                        "document_id": p.document}) + "\n" for p in pairs))


def judges(ctx: RoundContext) -> dict[str, Any]:
    """Retrain the reward model (and the ranker with `round_ranker`) warm-started from the
    current version; measure new and current on the newest batch and the new one on earlier
    rounds' held-out sets; a new judge worse than the current one on the newest batch is
    registered as a record but not used."""
    kinds = [ModelKind.REWARD, *([ModelKind.RANKER] if ctx.settings.ranker else [])]
    test_file = ctx.folder / "judge_test.jsonl"
    has_test = test_file.exists() and test_file.read_text().strip() != ""
    with ctx.tx() as db:
        earlier_rounds = sorted(r.number for r in _succeeded_rounds(db, ctx.number))
    out: dict[str, Any] = {}
    for kind in kinds:
        with ctx.tx() as db:
            current = active_judge(db, kind)
            warm = current or (active_judge(db, ModelKind.REWARD) if kind == ModelKind.RANKER else None)
            current_name, warm_name = (current.name if current else None), (warm.name if warm else None)
        name = f"{kind.value}-r{ctx.number}"
        with ctx.tx() as db:
            existing = find_version(db, name)
            trained_id = existing.id if existing is not None else None
        if trained_id is None:
            spec = JudgeTrainSpec(kind.value, data=ctx.folder / "judge_train.jsonl",
                                  test_data=test_file if has_test else None, init=warm_name, name=name,
                                  settings=ctx.options.judge_settings, round=ctx.number)
            trained = train_and_register(ctx.tx, spec, ctx.settings.models_dir, progress=False, on_step=ctx.on_step)
            if trained is None:
                raise Cancelled()
            new_acc = trained.metrics.get("test", {}).get("accuracy")
        else:
            with ctx.tx() as db:
                new_acc = ((db.get_one(ModelVersion, trained_id).metrics or {}).get("test") or {}).get("accuracy")
        current_acc = (evaluate_file(ctx.tx, kind.value, current_name, test_file)["accuracy"]
                       if has_test and current_name else None)
        earlier = {}
        for number in earlier_rounds:
            old = ctx.settings.home / "rounds" / f"loop-{number}" / "judge_test.jsonl"
            if old.exists() and old.read_text().strip():
                earlier[str(number)] = evaluate_file(ctx.tx, kind.value, name, old)["accuracy"]
        used = current_acc is None or (new_acc is not None and new_acc >= current_acc)
        with ctx.tx() as db:
            version = find_version(db, name)
            assert version is not None
            if used:
                activate(db, version)
            version.metrics = {**(version.metrics or {}), "round": {"newest_batch_accuracy": new_acc,
                                                                    "current_accuracy": current_acc,
                                                                    "earlier_test_sets": earlier, "used": used}}
        out[kind.value] = {"version": name, "newest_batch_accuracy": new_acc, "current": current_name,
                           "current_accuracy": current_acc, "earlier_test_sets": earlier, "used": used}
        ctx.log(f"{name}: {new_acc if new_acc is None else round(new_acc, 3)} on the newest batch "
                f"(current {current_name}: {current_acc if current_acc is None else round(current_acc, 3)}); "
                f"{'used' if used else 'kept as a record, not used'}")
    out["disagreements"] = _queue_disagreements(ctx)
    return out


def _queue_disagreements(ctx: RoundContext) -> int:
    """The newest batch's tasks where the reward model now in use confidently overrules the
    humans' majority, queued for an admin's review."""
    snap = ctx.metrics("snapshot")
    with ctx.tx() as db:
        judge = active_judge(db, ModelKind.REWARD)
        name = judge.name if judge is not None else None
    if name is None or not snap:
        return 0
    added = find_disagreements(ctx.tx, name, load_version(ctx.tx, name).prefer, round_=ctx.number,
                               after=snap.get("after"), upto=snap["judgement_id_max"],
                               include_simulated=ctx.options.include_simulated)
    ctx.log(f"{added} task(s) where {name} confidently overrules the humans' majority, queued for review")
    return added


def _judge_for(db: Session, kind: str) -> ModelVersion:
    version = active_judge(db, ModelKind(kind)) or active_judge(db, ModelKind.REWARD)
    if version is None:
        raise UsageError("no trained judge yet: a round trains one from the judgements (or run `calibra train reward`)")
    return version


def policy(ctx: RoundContext) -> dict[str, Any]:
    """A SLiC-HF round: the current policy's samples for the batch's documents ranked by the
    judge (or the human pairs, `mode=direct`), LoRA training continuing from its adapter."""
    opts = ctx.options
    files = RoundFiles(ctx.folder / "slic")
    name = f"policy-r{ctx.number}"
    with ctx.tx() as db:
        existing = find_version(db, name)
        if existing is not None:
            return {"version": name, "id": existing.id}
        judge = _judge_for(db, opts.judge)
        judge_name = judge.name
    if opts.mode == "direct":
        files.folder.mkdir(parents=True, exist_ok=True)
        records = direct_documents(read_pairs(ctx.folder / "judge_train.jsonl"))
        files.data.write_text("".join(r.as_json() + "\n" for r in records))
        ctx.log(f"direct: {sum(len(r.pairs) for r in records)} human pairs on {len(records)} documents")
    else:
        ids = ctx.metrics("snapshot").get("document_ids") or []
        ranked = sample_rank(ctx.tx, ctx.settings.home, judge=judge_name, docs=opts.docs, folder=files.folder,
                             sampling=_round_sampling(opts), document_ids=ids, progress=False)
        ctx.log(ranked.line())
    trained = train(ctx.tx, ctx.settings.home, folder=files.folder, name=name, overrides=opts.slic_settings,
                    round_=ctx.number, progress=False, on_step=ctx.on_step)
    if trained is None:
        raise Cancelled()
    ctx.log(f"{name}: {trained['pairs']} pairs, final loss {trained['final_loss']:.3f}")
    return {"version": name, "id": trained["id"], "ranked_by": opts.judge if opts.mode != "direct" else "human",
            "judge_version": judge_name if opts.mode != "direct" else None,
            "pairs": trained["pairs"], "final_loss": trained["final_loss"]}


def _round_sampling(opts: RoundOptions) -> RoundSampling:
    return replace(RoundSampling(), per_doc=opts.per_doc, seed=0)


def sft(ctx: RoundContext) -> dict[str, Any]:
    """Round 0: the supervised start (`training.slic.jobs.sft`) from the base policy."""
    name = "policy-sft"
    with ctx.tx() as db:
        existing = find_version(db, name)
        if existing is not None:
            return {"version": name, "id": existing.id}
    opts = ctx.options
    held_out = _evaluation_documents(ctx)  # never fine-tune on the documents the evaluation reads
    done = slic_sft(ctx.tx, ctx.settings.home, docs=opts.sft_docs, preferred=opts.sft_preferred,
                    include_simulated=opts.include_simulated, exclude=held_out, name=name,
                    overrides=opts.slic_settings,
                    folder=ctx.folder / "sft", progress=False, on_step=ctx.on_step)
    if done is None:
        raise Cancelled()
    ctx.log(f"{name}: {done['examples']} examples, final loss {done['final_loss']:.3f}")
    return {"version": name, "id": done["id"], "examples": done["examples"], "final_loss": done["final_loss"]}


def _evaluation_documents(ctx: RoundContext) -> list[int]:
    """The round's held-out documents: the newest `eval_docs` with text that the round's judges
    did not train on. The one definition that SFT (never trains on them), the evaluation (reads
    them) and the next batch (never sends them to annotators) share."""
    trained_on = set(ctx.metrics("snapshot").get("document_ids") or [])
    with ctx.tx() as db:
        query = select(Document.id).where(Document.has_text.is_(True)).order_by(Document.id.desc())
        ids = [i for i in db.scalars(query) if i not in trained_on]
    return ids[:ctx.options.eval_docs]


def evaluate_and_gate(ctx: RoundContext) -> dict[str, Any]:
    """New policy against the current one and the human reference on held-out documents, by
    every trained judge; promote when the gate passes, else keep the current policy and say why."""
    trained = ctx.metrics("sft" if ctx.number == 0 else "policy")
    name = trained["version"]
    eval_ids = _evaluation_documents(ctx)
    with ctx.tx() as db:
        current = active_policy(db)
        if current is None:
            raise UsageError("no active policy")
        current_name = current.name
        judges = {k.value: v for k in (ModelKind.REWARD, ModelKind.RANKER) if (v := active_judge(db, k))}
        accuracy = {k: ((v.metrics or {}).get("round") or {}).get("newest_batch_accuracy")
                    or ((v.metrics or {}).get("test") or {}).get("accuracy") for k, v in judges.items()}
        judge_names = {k: v.name for k, v in judges.items()}
    ranked_by = trained.get("ranked_by", "")
    # no judge yet (round 0, before any judgements): the gate reads ROUGE-L against the references
    read = gate_judge(ranked_by, list(judge_names)) if judge_names else None
    other = [k for k in judge_names if k != read]
    summary = evaluate(ctx.tx, ctx.settings.home, model=name, judge=judge_names.get(read) if read else None,
                       reward=judge_names[other[0]] if other else None, previous=current_name,
                       docs=None, document_ids=eval_ids, folder=ctx.folder / "eval", progress=False)
    with ctx.tx() as db:
        alarms = open_alarms(db)
    decision = decide(summary, read, accuracy.get(read) if read else None,
                      min_win_rate=ctx.settings.promote_min_win_rate,
                      max_length_growth=ctx.settings.promote_max_length_growth, alarms=alarms)
    with ctx.tx() as db:
        if decision.promote:
            version = find_version(db, name)
            assert version is not None
            promote(db, version, f"round {ctx.number}", "; ".join(decision.reasons))
        db.get_one(TrainingRound, ctx.round_id).decision = {**decision.as_dict(), "new": name,
                                                            "current": current_name,
                                                            "judge_accuracy": accuracy,
                                                            "ranking_judge": trained.get("judge_version")}
    ctx.log(("promoted " if decision.promote else "kept the current policy: ") + "; ".join(decision.reasons))
    return {"summary": summary, "decision": decision.as_dict(), "judges": judge_names, "judge_accuracy": accuracy,
            "new": name, "current": current_name}


def next_batch(ctx: RoundContext) -> dict[str, Any]:
    """Candidates for fresh documents (imported, in no task yet, not held out for evaluation)
    from the promoted policy and the one before it, as the comparison tasks of round R+1: the
    annotators judge the newest model next. `random` selection: documents at random, each task
    2-4 candidates with the human reference; `uncertainty`: the documents and pairs the current
    judge is least sure of (`training.rounds.selection`)."""
    batch_docs = ctx.options.batch_docs or ctx.settings.batch_docs
    selection = ctx.options.next_batch_selection or ctx.settings.next_batch_selection
    evaluated = ctx.metrics("evaluate")
    seed = random.Random(ctx.number).randrange(2**31)
    held_out = set(_evaluation_documents(ctx))
    with ctx.tx() as db:
        used = select(ComparisonTask.document_id)
        fresh = [i for i in db.scalars(select(Document.id).where(Document.has_text.is_(True), Document.id.not_in(used))
                                       .order_by(Document.id)) if i not in held_out]
        active = active_policy(db)
        assert active is not None
        # the promoted policy and the one it replaced (the same one twice when nothing was promoted)
        sources = list(dict.fromkeys([active.name, evaluated.get("current") or active.name]))
        judge = active_judge(db, ModelKind.REWARD)
        judge_name = judge.name if judge is not None else None
    if not fresh:
        raise Skip("no fresh documents for the next batch (every document is in a task or held out): import more "
                   "with `calibra import documents FILE`")
    uncertain = selection == "uncertainty" and judge_name is not None
    pool = random_documents(fresh, batch_docs * (POOL_FACTOR if uncertain else 1), seed)
    added = {}
    for source in sources:
        cfg = SamplingConfig(per_doc=2 if len(sources) == 1 else 1, seed=seed)
        result = generate_candidates(ctx.tx, cfg, model=source, document_ids=pool, progress=False)
        added[source] = result["candidates_added"]
    pairs = _uncertain_pairs(ctx, pool, sources, judge_name, batch_docs) if uncertain and judge_name else None
    chosen = sorted(pairs) if pairs else pool
    with ctx.tx() as db:
        tasks = ctx.make_tasks(db, chosen, ctx.number + 1, ctx.settings.replication, pairs=pairs)
    how = f"the pairs {judge_name} is least sure of" if pairs else "documents at random"
    ctx.log(f"{tasks} tasks for round {ctx.number + 1} on {len(chosen)} fresh documents from {', '.join(sources)} "
            f"({how})")
    return {"documents": len(chosen), "tasks": tasks, "round": ctx.number + 1, "candidates": added,
            "selection": "uncertainty" if pairs else "random"}


def _uncertain_pairs(ctx: RoundContext, pool: list[int], sources: list[str], judge: str,
                     k: int) -> dict[int, tuple[int, int]]:
    """The sources' samples of each pooled document, and the k documents (with one pair each)
    whose pair the judge finds closest to a coin toss."""
    with ctx.tx() as db:
        version_ids = [v.id for name in sources if (v := find_version(db, name)) is not None]
        in_tasks = select(TaskCandidate.candidate_id)
        rows = db.execute(select(Candidate.document_id, Candidate.id, Candidate.text).where(
            Candidate.document_id.in_(pool), Candidate.model_version_id.in_(version_ids),
            Candidate.id.not_in(in_tasks)))
        candidates: dict[int, list[tuple[int, str]]] = {}
        for doc_id, cid, text in rows:
            candidates.setdefault(doc_id, []).append((cid, text))
        posts = {d.id: format_post(d.subreddit, d.title, d.text)
                 for d in db.scalars(select(Document).where(Document.id.in_(list(candidates))))}
    candidates = {d: c for d, c in candidates.items() if len(c) >= 2}
    return uncertain_pairs(posts, candidates, load_version(ctx.tx, judge).prefer, k)
