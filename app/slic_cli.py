"""`calibra slic sample-rank | train | eval | round`: a SLiC-HF round from the app's data.

A round lives in a folder (default `<home>/rounds/round-N`, N one more than the active
policy's round): `round.jsonl` (candidates, ranks, pairs), `adapter/`, `eval.json`. Every step
resumes from what the folder holds when run again.
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from app.cli_support import print_payload, reports_errors
from app.context import open_context
from app.judges_cli import ReportTo

if TYPE_CHECKING:
    from training.slic.config import RoundSampling

slic_cli = typer.Typer(help="SLiC-HF rounds: sample and rank, train a LoRA adapter, evaluate.", no_args_is_help=True)

Folder = Annotated[Path | None, typer.Option(help="the round's folder (default: <home>/rounds/round-N)")]
PolicyRef = Annotated[str | None, typer.Option("--policy", help="policy version (default: the active one)")]
Docs = Annotated[int | None, typer.Option(help="how many documents (default: all with text)")]
Split = Annotated[str | None, typer.Option(help="only documents of this split")]


@slic_cli.command("sample-rank")
@reports_errors
def sample_rank(
    judge: Annotated[str | None, typer.Option(help="ranker or reward version that ranks the samples")] = None,
    mode: Annotated[str,
                    typer.Option(help="sample-rank (sample m, rank them) | direct (the human pairs)")] = "sample-rank",
    policy: PolicyRef = None, docs: Docs = None, split: Split = None,
    per_doc: Annotated[int | None, typer.Option(help="m: samples per document (SLiC-HF: 8)")] = None,
    temperature: Annotated[float | None, typer.Option(help="(0.7)")] = None,
    top_k: Annotated[int | None, typer.Option(help="(40)")] = None,
    max_new_tokens: Annotated[int | None, typer.Option(help="(64)")] = None,
    seed: Annotated[int | None, typer.Option(help="(0)")] = None,
    folder: Folder = None,
) -> None:
    """Sample m candidates per document from the policy and rank them (tournament with a
    ranker, sorted by a reward model), or take the human pairs as they are (--mode direct).
    Candidates and their ranks are stored; the round's pairs go to round.jsonl.

    Examples:
      calibra slic sample-rank --judge ranker-r1 --docs 64
      calibra slic sample-rank --mode direct
    """
    from training.slic.jobs import sample_rank as run

    ctx = open_context()
    result = run(ctx.transaction, ctx.settings.home, judge=judge, mode=mode, policy=policy, docs=docs, split=split,
                 sampling=_sampling(per_doc=per_doc, temperature=temperature, top_k=top_k,
                                    max_new_tokens=max_new_tokens, seed=seed), folder=folder)
    typer.echo(result.line(), err=True)


def _sampling(**given: float | None) -> RoundSampling:
    """The round's sampling settings with the options that were given."""
    from training.slic.config import RoundSampling

    options: dict[str, Any] = {k: v for k, v in given.items() if v is not None}  # each field's own type
    return replace(RoundSampling(), **options)


@slic_cli.command("train")
@reports_errors
def train(
    policy: PolicyRef = None, folder: Folder = None,
    name: Annotated[str | None, typer.Option(help="the new policy version's name (default: policy-rN-DATE)")] = None,
    delta: Annotated[float | None, typer.Option(help="hinge margin δ (1.0)")] = None,
    reg_weight: Annotated[float | None, typer.Option(help="λ on -log P(y_ref|x) (0.5; 0 disables)")] = None,
    y_ref: Annotated[str | None, typer.Option(help="reference | best_decode")] = None,
    pairs_per_document: Annotated[int | None,
                                  typer.Option(help="the judge's most confident N pairs per document (0: all)")] = None,
    learning_rate: Annotated[float | None, typer.Option()] = None,
    epochs: Annotated[int | None, typer.Option()] = None,
    batch_size: Annotated[int | None, typer.Option()] = None,
    grad_accum: Annotated[int | None, typer.Option()] = None,
    lora_r: Annotated[int | None, typer.Option()] = None,
    length_normalize: Annotated[bool | None, typer.Option()] = None,
    gradient_checkpointing: Annotated[bool | None, typer.Option()] = None,
    activate: Annotated[bool, typer.Option(help="make the new policy the active one")] = False,
    report_to: ReportTo = "none",
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Train a LoRA adapter with the SLiC-HF loss on the round's pairs and register it as a
    new policy version (its parent, the data's hash, settings and metrics recorded).

    Example: calibra slic train --reg-weight 0.5 --activate --report-to tensorboard
    """
    from training.slic.jobs import registered_line
    from training.slic.jobs import train as run

    opts = dict(delta=delta, reg_weight=reg_weight, y_ref=y_ref, pairs_per_document=pairs_per_document,
                learning_rate=learning_rate, epochs=epochs, batch_size=batch_size, grad_accum=grad_accum,
                lora_r=lora_r, length_normalize=length_normalize, gradient_checkpointing=gradient_checkpointing,
                report_to=report_to)
    ctx = open_context()
    version = run(ctx.transaction, ctx.settings.home, policy=policy, folder=folder, name=name, overrides=opts,
                  activate=activate)
    if version is not None:  # None in the extra processes of `accelerate launch`
        print_payload(version, as_json)
        typer.echo(registered_line(version), err=as_json)


@slic_cli.command("eval")
@reports_errors
def evaluate(
    model: Annotated[str, typer.Option(help="the new policy version")],
    judge: Annotated[str, typer.Option(help="ranker (or reward) version that judges")],
    reward: Annotated[str | None, typer.Option(help="a reward version as a second judge")] = None,
    previous: Annotated[str | None, typer.Option(help="the policy to beat (default: the new one's parent)")] = None,
    docs: Docs = 100, split: Split = None,
    offset: Annotated[int, typer.Option(help="skip this many documents (keep training documents out)")] = 0,
    seed: Annotated[int | None, typer.Option(help="(1234)")] = None,
    folder: Folder = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Win rate of the new policy over the previous one and over the human reference, judged
    by the ranking and reward models, with lengths and the reference's log-prob under both;
    stored on the new version.

    Example: calibra slic eval --model policy-r1 --judge ranker-r1 --split test --docs 100
    """
    from training.slic.jobs import evaluate as run
    from training.slic.jobs import evaluation_line

    ctx = open_context()
    result = run(ctx.transaction, ctx.settings.home, model=model, judge=judge, reward=reward, previous=previous,
                 docs=docs, split=split, offset=offset, sampling=_sampling(eval_seed=seed), folder=folder)
    print_payload(result, as_json)
    typer.echo(f"{result['model']}: {evaluation_line(result)}", err=as_json)


@slic_cli.command("round")
@reports_errors
def slic_round(
    judge: Annotated[str, typer.Option(help="ranker or reward version that ranks and judges")],
    reward: Annotated[str | None, typer.Option(help="a reward version as a second judge in the evaluation")] = None,
    docs: Docs = 64, eval_docs: Annotated[int, typer.Option(help="held-out documents for the evaluation")] = 100,
    split: Split = None, policy: PolicyRef = None, folder: Folder = None,
    per_doc: Annotated[int | None, typer.Option(help="m: samples per document (8)")] = None,
    name: Annotated[str | None, typer.Option(help="the new policy version's name")] = None,
    activate: Annotated[bool, typer.Option(help="make the new policy the active one")] = False,
    report_to: ReportTo = "none",
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """sample-rank, train and eval in sequence; run again after an interruption and each step
    goes on from what the round's folder holds. Evaluation uses the documents after the
    training ones.

    Example: calibra slic round --judge ranker-r1 --docs 64 --eval-docs 100 --activate
    """
    from training.slic.jobs import registered_line, run_round

    ctx = open_context()
    result = run_round(ctx.transaction, ctx.settings.home, judge=judge, reward=reward, docs=docs, eval_docs=eval_docs,
                       split=split, policy=policy, folder=folder, sampling=_sampling(per_doc=per_doc), name=name,
                       activate=activate, overrides={"report_to": report_to})
    if result is not None:
        print_payload(result, as_json)
        typer.echo(registered_line(result, result["evaluation"]), err=as_json)
