"""The SLiC-HF use cases, one function each, called alike by the CLI, the round worker and the
admin page: sample and rank (or take the human pairs), train and register the adapter, evaluate
the new policy, and the three in sequence.

A round lives in a folder (default `<home>/rounds/round-N`, N one more than the policy's round)
holding `round.jsonl`, `adapter/` and `eval.json`; every step resumes from what it holds.
"""
from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from db.engine import Transactions
from db.models import ModelKind, ModelVersion
from training.errors import UsageError
from training.judges.store import pairs_from_database
from training.loading import load_tokenizer
from training.prompts import resolve_template
from training.registry import JUDGE_KINDS, register_version, resolve_version
from training.registry import activate as activate_version  # the functions' `activate` flag shadows the name
from training.slic.config import RoundSampling, SlicConfig
from training.slic.data import RankedDocument, direct_documents
from training.slic.round import (
    Policy,
    RoundFiles,
    evaluation_summary,
    load_round,
    run_evaluation,
    run_sample_rank,
    run_sft,
    run_train,
)
from training.slic.store import round_documents, store_ranked
from training.training_run import logs_entry, logs_note

MODES = ("sample-rank", "direct")


def _detached(tx: Transactions, ref: str | None, kinds: tuple[ModelKind, ...] = ()) -> ModelVersion:
    with tx() as db:
        version = resolve_version(db, ref, kinds)
        db.expunge(version)
    return version


def policy_of(version: ModelVersion) -> Policy:
    return Policy(version.base_model, version.artifact_path)


def round_number(policy: ModelVersion) -> int:
    """The round a policy's successor belongs to."""
    return (policy.round or 0) + 1


def round_files(home: Path, folder: Path | None, policy: ModelVersion) -> RoundFiles:
    return RoundFiles(folder or home / "rounds" / f"round-{round_number(policy)}")


def slic_config(overrides: dict[str, Any]) -> SlicConfig:
    """SlicConfig with the given fields set (unknown keys and None values are ignored)."""
    known = {f.name for f in fields(SlicConfig)}
    try:
        return SlicConfig(**{k: v for k, v in overrides.items() if k in known and v is not None})
    except ValueError as exc:
        raise UsageError(str(exc)) from None


@dataclass(frozen=True)
class SampleRankResult:
    folder: Path
    data: Path
    documents: int
    pairs: int
    ranked_by: str  # a judge version's name, or "human" for direct mode

    def line(self) -> str:
        return f"{self.documents} documents, {self.pairs} pairs ranked by {self.ranked_by} in {self.data}"


def sample_rank(tx: Transactions, home: Path, *, judge: str | None, mode: str = "sample-rank",
                policy: str | None = None, docs: int | None = None, split: str | None = None,
                sampling: RoundSampling = RoundSampling(), folder: Path | None = None,
                document_ids: Sequence[int] | None = None, progress: bool = True) -> SampleRankResult:
    """Sample m candidates per document from the policy and rank them by the judge (each
    document's candidates and ranks stored as it finishes, so they can go to annotators), or in
    `direct` mode take the human pairs as they are."""
    if mode not in MODES:
        raise UsageError("--mode must be sample-rank or direct")
    pol = _detached(tx, policy)
    files = round_files(home, folder, pol)
    if mode == "direct":
        with tx() as db:
            pairs, _ = pairs_from_database(db)
        if not pairs:
            raise UsageError("no human preference pairs in the database yet")
        files.folder.mkdir(parents=True, exist_ok=True)
        records = direct_documents(pairs)
        files.data.write_text("".join(r.as_json() + "\n" for r in records))
        return SampleRankResult(files.folder, files.data, len(records), sum(len(r.pairs) for r in records), "human")
    if judge is None:
        raise UsageError("sample-rank needs --judge (a ranker or reward version)")
    jud = _detached(tx, judge, JUDGE_KINDS)
    try:
        cfg = sampling.sampling()
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    with tx() as db:
        documents = round_documents(db, limit=docs, split=split, document_ids=document_ids)
    decoding = cfg.decoding(resolve_template(load_tokenizer(pol.base_model), cfg.template))

    def store(record: RankedDocument) -> None:
        with tx() as db:  # each document is kept if the run stops
            store_ranked(db, db.merge(pol), db.merge(jud), record, decoding)

    records = run_sample_rank(policy_of(pol), documents, jud.kind.value, jud.artifact_path or jud.base_model, files,
                              sampling=cfg, progress=progress, on_document=store)
    return SampleRankResult(files.folder, files.data, len(records), sum(len(r.pairs) for r in records), jud.name)


def train(tx: Transactions, home: Path, *, policy: str | None = None, folder: Path | None = None,
          name: str | None = None, overrides: dict[str, Any] | None = None, activate: bool = False,
          round_: int | None = None, progress: bool = True,
          on_step: Callable[[int, int, float], bool] | None = None) -> dict[str, Any] | None:
    """Train a LoRA adapter with the SLiC-HF loss on the round's pairs and register it as a new
    policy version (parent, round, data snapshot, settings, training metrics); the summary that
    `calibra slic train --json` prints. None in the extra processes of `accelerate launch`."""
    cfg = slic_config(overrides or {})
    pol = _detached(tx, policy)
    files = round_files(home, folder, pol)
    records = load_round(files)
    if not records:
        raise UsageError(f"{files.data} holds no ranked documents; run `calibra slic sample-rank` first")
    result = run_train(policy_of(pol), records, cfg, files, progress=progress, on_step=on_step)
    if result.path is None:  # an extra process of `accelerate launch`, or stopped by `on_step`
        return None
    round_ = round_number(pol) if round_ is None else round_
    name = name or f"policy-r{round_}-{datetime.now(UTC):%Y%m%d-%H%M%S}"
    metrics = {k: v for k, v in result.metrics.items() if k != "history"}
    with tx() as db:
        version = register_version(db, ModelKind.POLICY, name, pol.base_model, str(files.adapter),
                                   parent=db.merge(pol), round_=round_, config=cfg.as_dict(),
                                   metrics={"training": metrics},
                                   snapshot={"round_file": str(files.data), "documents": len(records),
                                             "hash": metrics["data_hash"]})
        if activate:
            activate_version(db, version)
        return {"model_version": version.name, "id": version.id, "parent": pol.name, "adapter": str(files.adapter),
                "pairs": metrics["pairs"], "final_loss": metrics["final_loss"],
                "pair_accuracy_last_quarter": metrics["pair_accuracy_last_quarter"],
                "train_seconds": round(metrics["train_seconds"], 1), "active": activate, **logs_entry(metrics)}


def registered_line(summary: dict[str, Any], evaluation: dict[str, Any] | None = None) -> str:
    """What `calibra slic train|round` and `calibra sft` end with: the new policy version, where
    it is, and how its evaluation went when there was one."""
    data = f"{summary['pairs']} pairs" if "pairs" in summary else f"{summary['examples']} examples"
    active = ", now the active policy," if summary["active"] else ""
    evaluated = f"; {evaluation_line(evaluation)}" if evaluation is not None else ""
    return (f"registered {summary['model_version']}{active} ({data}, final loss {summary['final_loss']:.3f}) "
            f"at {summary['adapter']}{evaluated}{logs_note(summary.get('logs'))}")


def evaluation_line(summary: dict[str, Any]) -> str:
    """An evaluation in a line: the win rate over the previous policy by each judge, and where
    the samples are."""
    suffix = "_new_vs_previous_win_rate"
    rates = ", ".join(f"{k.removesuffix(suffix)} {v:.2f}" for k, v in summary.items()
                      if k.endswith(suffix) and v is not None)
    return (f"win rate over {summary['previous']} on {summary['documents']} documents: {rates or 'not judged'} "
            f"(samples in {summary['eval_file']})")


def previous_policy(tx: Transactions, new: ModelVersion, previous: str | None) -> ModelVersion:
    """The policy to beat: the one named, or else the new one's parent."""
    if previous is not None:
        return _detached(tx, previous, (ModelKind.POLICY,))
    if new.parent_id is None:
        raise UsageError("no previous policy to compare with; pass --previous")
    return _detached(tx, str(new.parent_id))


def evaluate(tx: Transactions, home: Path, *, model: str, judge: str | None, reward: str | None = None,
             previous: str | None = None, docs: int | None = 100, split: str | None = None, offset: int = 0,
             sampling: RoundSampling = RoundSampling(), folder: Path | None = None,
             document_ids: Sequence[int] | None = None, progress: bool = True) -> dict[str, Any]:
    """Win rates of the new policy over the previous one and of both over the human reference,
    per judge, with lengths, layout restatements and the reference's log-prob under both; the
    headline figures are merged into the new version's metrics."""
    new = _detached(tx, model, (ModelKind.POLICY,))
    judges = {}
    for ref in (judge, reward):
        if ref is not None:
            version = _detached(tx, ref, JUDGE_KINDS)
            judges[version.kind.value] = (version.kind.value, version.artifact_path or version.base_model)
    prev = previous_policy(tx, new, previous)
    with tx() as db:
        documents = round_documents(db, limit=docs, split=split, offset=offset, document_ids=document_ids)
    files = round_files(home, folder, prev)
    files.folder.mkdir(parents=True, exist_ok=True)
    result = run_evaluation(policy_of(new), policy_of(prev), documents, judges, files, sampling=sampling.evaluation(),
                            cfg=slic_config(new.config or {}), progress=progress)
    summary = evaluation_summary(result)
    with tx() as db:
        version = db.merge(new)
        version.metrics = {**(version.metrics or {}), "evaluation": {**summary, "previous": prev.name,
                                                                    "judges": {k: v[1] for k, v in judges.items()}}}
    return {"model": new.name, "previous": prev.name, **summary, "eval_file": str(files.evaluation)}


def run_round(tx: Transactions, home: Path, *, judge: str, reward: str | None = None, docs: int | None = 64,
              eval_docs: int = 100, split: str | None = None, policy: str | None = None, folder: Path | None = None,
              sampling: RoundSampling = RoundSampling(), name: str | None = None, activate: bool = False,
              overrides: dict[str, Any] | None = None, progress: bool = True) -> dict[str, Any] | None:
    """sample-rank, train (with the SlicConfig fields in `overrides`) and evaluate in sequence,
    each going on from what the round's folder holds; evaluation uses the documents after the
    training ones. The new policy is made the active one only after its evaluation, when `activate`."""
    slic_config(overrides or {})  # a bad setting stops the round now, not after the sampling
    ranked = sample_rank(tx, home, judge=judge, policy=policy, docs=docs, split=split, sampling=sampling,
                         folder=folder, progress=progress)
    trained = train(tx, home, policy=policy, folder=ranked.folder, name=name, overrides=overrides, progress=progress)
    if trained is None:
        return None
    summary = evaluate(tx, home, model=trained["model_version"], judge=judge, reward=reward, docs=eval_docs,
                       split=split, offset=docs or 0, sampling=sampling, folder=ranked.folder, progress=progress)
    if activate:
        with tx() as db:
            activate_version(db, resolve_version(db, trained["model_version"]))
    return {**trained, "active": activate, "evaluation": summary}


def sft(tx: Transactions, home: Path, *, docs: int | None = None, preferred: bool = False,
        include_simulated: bool = False, exclude: Collection[int] = (), policy: str | None = None,
        name: str = "policy-sft",
        overrides: dict[str, Any] | None = None, folder: Path | None = None, activate: bool = False,
        progress: bool = True, on_step: Callable[[int, int, float], bool] | None = None) -> dict[str, Any] | None:
    """A supervised start (round 0): LoRA fine-tuning of the policy on the human reference
    summaries of `docs` documents (all that have one by default, less those in `exclude`: held out
    for the evaluation) and, with `preferred`, on the human-preferred summary of each pair — the
    SLiC-HF trainer with the λ·log P(y_ref) term alone. Registered as a policy version of round 0;
    None if stopped by `on_step`."""
    base = _detached(tx, policy)
    with tx() as db:
        held_out = {str(i) for i in exclude}
        documents = [d for d in round_documents(db, limit=None) if d.reference and d.key not in held_out][:docs]
        chosen: dict[str, list[str]] = {}
        if preferred:
            pairs, _ = pairs_from_database(db, include_simulated=include_simulated)
            for p in pairs:
                if p.key not in held_out:
                    chosen.setdefault(p.key, []).append(p.chosen)
    if not documents:
        raise UsageError("no documents with a human reference summary to fine-tune on; import some, e.g. "
                         "`calibra import documents ../shared/data/tldr/posts_test400.jsonl`")
    cfg = slic_config({**(overrides or {}), "sft": True})
    files = RoundFiles(folder or home / "rounds" / "sft")
    result = run_sft(policy_of(base), documents, cfg, files, preferred=chosen, progress=progress, on_step=on_step)
    if result.path is None:
        return None
    metrics = {k: v for k, v in result.metrics.items() if k != "history"}
    with tx() as db:
        version = register_version(db, ModelKind.POLICY, name, base.base_model, str(files.adapter),
                                   parent=db.merge(base), round_=0, config=cfg.as_dict(), metrics={"training": metrics},
                                   snapshot={"documents": len(documents), "preferred": sum(map(len, chosen.values())),
                                             "hash": metrics["data_hash"]})
        if activate:
            activate_version(db, version)
        return {"model_version": version.name, "id": version.id, "parent": base.name, "adapter": str(files.adapter),
                "examples": metrics["pairs"], "final_loss": metrics["final_loss"],
                "train_seconds": round(metrics["train_seconds"], 1), "active": activate, **logs_entry(metrics)}
