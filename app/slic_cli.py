"""`calibra slic sample-rank | train | eval | round`: a SLiC-HF round from the app's data.

A round lives in a folder (default `<home>/rounds/round-N`, N one more than the active
policy's round): `round.jsonl` (candidates, ranks, pairs), `adapter/`, `eval.json`. Every step
resumes from what the folder holds when run again.
"""
from __future__ import annotations

from dataclasses import fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer

from app.cli_support import CliError, print_payload, reports_errors
from app.context import Context, open_context

slic_cli = typer.Typer(help="SLiC-HF rounds: sample and rank, train a LoRA adapter, evaluate.", no_args_is_help=True)

Folder = Annotated[Path | None, typer.Option(help="the round's folder (default: <home>/rounds/round-N)")]
PolicyRef = Annotated[str | None, typer.Option("--policy", help="policy version (default: the active one)")]
Docs = Annotated[int | None, typer.Option(help="how many documents (default: all with text)")]
Split = Annotated[str | None, typer.Option(help="only documents of this split")]


def _versions(ctx: Context, policy: str | None, judge: str | None):  # type: ignore[no-untyped-def]
    from training.registry import active_policy, find_version

    with ctx.transaction() as db:
        pol = find_version(db, policy) if policy else active_policy(db)
        if pol is None:
            raise CliError(f"no policy version {policy!r}" if policy else "no active policy; run `calibra models fetch`")
        jud = find_version(db, judge) if judge else None
        if judge and (jud is None or jud.kind.value not in ("reward", "ranker")):
            raise CliError(f"{judge!r} is not a registered reward or ranker version; train one with `calibra train`")
        db.expunge_all()
    return pol, jud


def _folder(ctx: Context, folder: Path | None, policy: Any) -> Path:
    return folder or ctx.settings.home / "rounds" / f"round-{(policy.round or 0) + 1}"


def _policy(version: Any):  # type: ignore[no-untyped-def]
    from training.slic_round import Policy

    return Policy(version.base_model, version.artifact_path)


@slic_cli.command("sample-rank")
@reports_errors
def sample_rank(
    judge: Annotated[str | None, typer.Option(help="ranker or reward version that ranks the samples")] = None,
    mode: Annotated[str, typer.Option(help="sample-rank (sample m, rank them) | direct (the human pairs)")] = "sample-rank",
    policy: PolicyRef = None, docs: Docs = None, split: Split = None,
    per_doc: Annotated[int, typer.Option(help="m: samples per document (SLiC-HF: 8)")] = 8,
    temperature: Annotated[float, typer.Option()] = 0.7,
    top_k: Annotated[int, typer.Option()] = 40,
    max_new_tokens: Annotated[int, typer.Option()] = 64,
    seed: Annotated[int | None, typer.Option()] = None,
    folder: Folder = None,
) -> None:
    """Sample m candidates per document from the policy and rank them (tournament with a
    ranker, sorted by a reward model), or take the human pairs as they are (--mode direct).
    Candidates and their ranks are stored; the round's pairs go to round.jsonl.

    Examples:
      calibra slic sample-rank --judge ranker-r1 --docs 64
      calibra slic sample-rank --mode direct
    """
    _sample_rank(open_context(), judge, mode, policy, docs, split, per_doc, temperature, top_k, max_new_tokens,
                 seed, folder)


def _sample_rank(ctx: Context, judge: str | None, mode: str, policy: str | None, docs: int | None, split: str | None,
                 per_doc: int, temperature: float, top_k: int, max_new_tokens: int, seed: int | None,
                 folder: Path | None) -> Path:
    from training.generation import SamplingConfig
    from training.judge_store import pairs_from_database
    from training.prompts import resolve_template
    from training.loading import load_tokenizer
    from training.slic_data import direct_documents
    from training.slic_round import RoundFiles, run_sample_rank
    from training.slic_store import round_documents, store_ranked

    pol, jud = _versions(ctx, policy, judge)
    files = RoundFiles(_folder(ctx, folder, pol))
    if mode == "direct":
        with ctx.transaction() as db:
            pairs, _ = pairs_from_database(db)
        if not pairs:
            raise CliError("no human preference pairs in the database yet")
        files.folder.mkdir(parents=True, exist_ok=True)
        records = direct_documents(pairs)
        files.data.write_text("".join(r.as_json() + "\n" for r in records))
        typer.echo(f"{len(records)} documents, {sum(len(r.pairs) for r in records)} human pairs in {files.data}", err=True)
        return files.folder
    if mode != "sample-rank":
        raise CliError("--mode must be sample-rank or direct")
    if jud is None:
        raise CliError("sample-rank needs --judge (a ranker or reward version)")
    try:
        sampling = SamplingConfig(per_doc=per_doc, temperature=temperature, top_k=top_k,
                                  max_new_tokens=max_new_tokens, seed=seed)
    except ValueError as exc:
        raise CliError(str(exc)) from None
    with ctx.transaction() as db:
        documents = round_documents(db, limit=docs, split=split)
    decoding = sampling.decoding(resolve_template(load_tokenizer(pol.base_model), sampling.template))

    def store(record):  # type: ignore[no-untyped-def]
        with ctx.transaction() as db:  # each document is kept if the run stops
            store_ranked(db, db.merge(pol), db.merge(jud), record, decoding)

    records = run_sample_rank(_policy(pol), documents, jud.kind.value, jud.artifact_path, files, sampling=sampling,
                              on_document=store)
    typer.echo(f"{len(records)} documents ranked by {jud.name}, {sum(len(r.pairs) for r in records)} pairs in {files.data}",
               err=True)
    return files.folder


def _slic_config(overrides: dict[str, Any]):  # type: ignore[no-untyped-def]
    from training.slic_config import SlicConfig

    known = {f.name for f in fields(SlicConfig)}
    try:
        return SlicConfig(**{k: v for k, v in overrides.items() if k in known and v is not None})
    except ValueError as exc:
        raise CliError(str(exc)) from None


@slic_cli.command("train")
@reports_errors
def train(
    policy: PolicyRef = None, folder: Folder = None,
    name: Annotated[str | None, typer.Option(help="the new policy version's name (default: policy-rN)")] = None,
    delta: Annotated[float | None, typer.Option(help="hinge margin δ (1.0)")] = None,
    reg_weight: Annotated[float | None, typer.Option(help="λ on -log P(y_ref|x) (0.5; 0 disables)")] = None,
    y_ref: Annotated[str | None, typer.Option(help="reference | best_decode")] = None,
    pairs_per_document: Annotated[int | None, typer.Option(help="the judge's most confident N pairs per document (0: all)")] = None,
    learning_rate: Annotated[float | None, typer.Option()] = None,
    epochs: Annotated[int | None, typer.Option()] = None,
    batch_size: Annotated[int | None, typer.Option()] = None,
    grad_accum: Annotated[int | None, typer.Option()] = None,
    lora_r: Annotated[int | None, typer.Option()] = None,
    length_normalize: Annotated[bool | None, typer.Option()] = None,
    gradient_checkpointing: Annotated[bool | None, typer.Option()] = None,
    activate: Annotated[bool, typer.Option(help="make the new policy the active one")] = False,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Train a LoRA adapter with the SLiC-HF loss on the round's pairs and register it as a
    new policy version (its parent, the data's hash, settings and metrics recorded).

    Example: calibra slic train --reg-weight 0.5 --activate
    """
    opts = dict(delta=delta, reg_weight=reg_weight, y_ref=y_ref, pairs_per_document=pairs_per_document,
                learning_rate=learning_rate, epochs=epochs,
                batch_size=batch_size, grad_accum=grad_accum, lora_r=lora_r, length_normalize=length_normalize,
                gradient_checkpointing=gradient_checkpointing)
    version = _train(open_context(), policy, folder, name, opts, activate)
    if version is not None:
        print_payload(version, as_json)


def _train(ctx: Context, policy: str | None, folder: Path | None, name: str | None, opts: dict[str, Any],
           activate: bool) -> dict[str, Any] | None:
    """The new version's summary; None in the extra processes of `accelerate launch`."""
    from training.loop import is_main_process
    from training.slic_round import RoundFiles, load_round, run_train
    from training.slic_store import register_policy

    cfg = _slic_config(opts)
    pol, _ = _versions(ctx, policy, None)
    files = RoundFiles(_folder(ctx, folder, pol))
    records = load_round(files)
    if not records:
        raise CliError(f"{files.data} holds no ranked documents; run `calibra slic sample-rank` first")
    result = run_train(_policy(pol), records, cfg, files)
    if not is_main_process():  # the main process registers what all of them trained
        return None
    round_ = (pol.round or 0) + 1
    name = name or f"policy-r{round_}-{datetime.now(UTC):%Y%m%d-%H%M%S}"
    metrics = {k: v for k, v in result.metrics.items() if k != "history"}
    with ctx.transaction() as db:
        version = register_policy(db, name, db.merge(pol), str(files.adapter), round_=round_, config=cfg.as_dict(),
                                  metrics={"training": metrics},
                                  snapshot={"round_file": str(files.data), "documents": len(records),
                                            "hash": metrics["data_hash"]}, activate=activate)
        return {"model_version": version.name, "id": version.id, "parent": pol.name, "adapter": str(files.adapter),
                "pairs": metrics["pairs"], "final_loss": metrics["final_loss"],
                "pair_accuracy_last_quarter": metrics["pair_accuracy_last_quarter"],
                "train_seconds": round(metrics["train_seconds"], 1), "active": activate}


@slic_cli.command("eval")
@reports_errors
def evaluate(
    model: Annotated[str, typer.Option(help="the new policy version")],
    judge: Annotated[str, typer.Option(help="ranker (or reward) version that judges")],
    reward: Annotated[str | None, typer.Option(help="a reward version as a second judge")] = None,
    previous: Annotated[str | None, typer.Option(help="the policy to beat (default: the new one's parent)")] = None,
    docs: Docs = 100, split: Split = None,
    offset: Annotated[int, typer.Option(help="skip this many documents (keep training documents out)")] = 0,
    seed: Annotated[int, typer.Option()] = 1234,
    folder: Folder = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Win rate of the new policy over the previous one and over the human reference, judged
    by the ranking and reward models, with lengths and the reference's log-prob under both;
    stored on the new version.

    Example: calibra slic eval --model policy-r1 --judge ranker-r1 --split test --docs 100
    """
    print_payload(_evaluate(open_context(), model, judge, reward, previous, docs, split, offset, seed, folder), as_json)


def _evaluate(ctx: Context, model: str, judge: str, reward: str | None, previous: str | None, docs: int | None,
              split: str | None, offset: int, seed: int, folder: Path | None) -> dict[str, Any]:
    from training.generation import SamplingConfig
    from training.registry import find_version
    from training.slic_round import RoundFiles, evaluation_summary, run_evaluation
    from training.slic_store import round_documents

    new, jud = _versions(ctx, model, judge)
    _, rew = _versions(ctx, model, reward) if reward else (None, None)
    with ctx.transaction() as db:
        prev = find_version(db, previous) if previous else (db.get(type(new), new.parent_id) if new.parent_id else None)
        if prev is None:
            raise CliError("no previous policy to compare with; pass --previous")
        db.expunge(prev)
        documents = round_documents(db, limit=docs, split=split, offset=offset)
    judges = {jud.kind.value: (jud.kind.value, jud.artifact_path)}
    if rew is not None:
        judges[rew.kind.value] = (rew.kind.value, rew.artifact_path)
    cfg = _slic_config(new.config or {})
    files = RoundFiles(_folder(ctx, folder, prev))
    files.folder.mkdir(parents=True, exist_ok=True)
    result = run_evaluation(_policy(new), _policy(prev), documents, judges, files,
                            sampling=SamplingConfig(per_doc=1, seed=seed), cfg=cfg)
    summary = evaluation_summary(result)
    with ctx.transaction() as db:
        version = db.merge(new)
        version.metrics = {**(version.metrics or {}), "evaluation": {**summary, "previous": prev.name,
                                                                    "judges": {k: v[1] for k, v in judges.items()}}}
    return {"model": new.name, "previous": prev.name, **summary}


@slic_cli.command("round")
@reports_errors
def slic_round(
    judge: Annotated[str, typer.Option(help="ranker or reward version that ranks and judges")],
    reward: Annotated[str | None, typer.Option(help="a reward version as a second judge in the evaluation")] = None,
    docs: Docs = 64, eval_docs: Annotated[int, typer.Option(help="held-out documents for the evaluation")] = 100,
    split: Split = None, policy: PolicyRef = None, folder: Folder = None,
    per_doc: Annotated[int, typer.Option(help="m: samples per document")] = 8,
    name: Annotated[str | None, typer.Option(help="the new policy version's name")] = None,
    activate: Annotated[bool, typer.Option(help="make the new policy the active one")] = False,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """sample-rank, train and eval in sequence; run again after an interruption and each step
    goes on from what the round's folder holds. Evaluation uses the documents after the
    training ones.

    Example: calibra slic round --judge ranker-r1 --docs 64 --eval-docs 100 --activate
    """
    ctx = open_context()
    round_folder = _sample_rank(ctx, judge, "sample-rank", policy, docs, split, per_doc, 0.7, 40, 64, 0, folder)
    trained = _train(ctx, policy, round_folder, name, {}, activate=False)
    if trained is None:
        return
    summary = _evaluate(ctx, trained["model_version"], judge, reward, None, eval_docs, split, docs or 0, 1234,
                        round_folder)
    if activate:
        from training.registry import find_version
        from training.slic_store import activate_policy

        with ctx.transaction() as db:
            activate_policy(db, find_version(db, trained["model_version"]))
    print_payload({**trained, "active": activate, "evaluation": summary}, as_json)
