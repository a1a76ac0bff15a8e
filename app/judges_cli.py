"""`calibra train`, `calibra eval` and `calibra score`: the reward and ranking models."""
from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated

import typer

from app.cli_support import CliError, print_payload, reports_errors
from app.context import open_context
from db.backup import describe

KIND_HELP = "reward (pointwise scalar head) | ranker (pairwise: document, A, B)"
# every command that trains takes it (`calibra train`, `slic train|round`, `sft`), as TRL's report_to
ReportTo = Annotated[str, typer.Option(help="none | tensorboard: log the training curves beside the trained model "
                                            "(needs pip install -e '.[tensorboard]')")]


def _ids(text: str | None, option: str, what: str) -> list[int] | None:
    """`1,2,3` as a list of numbers; a bad value names its option."""
    if not text:
        return None
    if not re.fullmatch(r"\d+(,\d+)*", text):
        raise CliError(f"{option} must be {what} separated by commas, got {text!r}")
    return [int(x) for x in text.split(",")]


@reports_errors
def train(
    kind: Annotated[str, typer.Argument(help=KIND_HELP)],
    data: Annotated[Path | None,
                    typer.Option(help="prompt/chosen/rejected file (default: the app's judgements)")] = None,
    rounds: Annotated[str | None,
                      typer.Option(help="with the database: rounds to train on, e.g. 1,2 (default all)")] = None,
    test_split: Annotated[str, typer.Option(help="auto | document | newest (the newest round held out)")] = "auto",
    test_fraction: Annotated[float, typer.Option(help="documents held out by a split by document")] = 0.2,
    margin: Annotated[str,
                      typer.Option(help="none | small | large (Llama 2) | quality: margin inside the loss")] = "none",
    weighted: Annotated[bool, typer.Option(help="weight pairs by the export's agreement weights")] = False,
    include_simulated: Annotated[bool, typer.Option("--include-simulated",
                                                    help="train on simulated raters' judgements too")] = False,
    init: Annotated[str | None, typer.Option(help="warm start from this version or folder (the previous version, "
                                                  "or a reward model for the ranker)")] = None,
    backbone: Annotated[str | None, typer.Option(help="hub id, folder or GGUF (default: the default encoder)")] = None,
    name: Annotated[str | None, typer.Option(help="model version name (default: KIND-DATE)")] = None,
    epochs: Annotated[int | None, typer.Option()] = None,
    learning_rate: Annotated[float | None, typer.Option()] = None,
    max_length: Annotated[int | None, typer.Option(help="tokens per input; the post is cut, never the summary")] = None,
    batch_texts: Annotated[int | None, typer.Option(help="inputs per forward pass")] = None,
    grad_accum: Annotated[int | None, typer.Option()] = None,
    lora_r: Annotated[int | None, typer.Option(help=">0: LoRA on the backbone (for causal LM backbones)")] = None,
    freeze_layers: Annotated[int | None, typer.Option(help="keep the embeddings and the N lowest layers fixed")] = None,
    read_post: Annotated[bool | None, typer.Option(help="summaries attend to the post (cross-encoder); "
                                                        "default: post and summary encoded apart (two towers)")] = None,
    head_learning_rate: Annotated[float | None, typer.Option(help="the scalar head's own peak rate")] = None,
    seed: Annotated[int | None, typer.Option()] = None,
    report_to: ReportTo = "none",
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Train a reward or ranking model, measure it on held-out documents and register it.

    An interrupted run resumes from its last checkpoint when the same command is run again.

    Examples:
      calibra train reward
      calibra train ranker --rounds 1,2 --init ranker-r1
      calibra train reward --data ../shared/data/tldr/pairs_train.jsonl --name rm-tldr
      calibra train reward --report-to tensorboard
    """
    from training.judges.jobs import JudgeTrainSpec, train_and_register

    ctx = open_context()
    settings = {k: v for k, v in dict(backbone=backbone, test_fraction=test_fraction, epochs=epochs,
                                      learning_rate=learning_rate, max_length=max_length, batch_texts=batch_texts,
                                      grad_accum=grad_accum, lora_r=lora_r, freeze_layers=freeze_layers,
                                      read_post=read_post, head_learning_rate=head_learning_rate,
                                      seed=seed, report_to=report_to).items() if v is not None}
    spec = JudgeTrainSpec(kind, data=data, rounds=_ids(rounds, "--rounds", "round numbers"), test_split=test_split,
                          margin=margin, weighted=weighted, init=init, name=name, settings=settings,
                          include_simulated=include_simulated)
    trained = train_and_register(ctx.transaction, spec, ctx.settings.models_dir)
    if trained is not None:  # None in the extra processes of `accelerate launch`
        print_payload(trained.summary(), as_json)
        typer.echo(trained.line(), err=as_json)


@reports_errors
def evaluate(
    kind: Annotated[str, typer.Argument(help=KIND_HELP)],
    model: Annotated[str, typer.Option(help="model version (name or id), folder or hub id")],
    data: Annotated[Path, typer.Option(help="prompt/chosen/rejected file (jsonl, csv, parquet)")],
    limit: Annotated[int | None, typer.Option(help="only the first N pairs")] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Pairwise accuracy of a judge on any prompt/chosen/rejected file, with the length
    baseline, accuracy on pairs of similar length, per margin and calibration.

    Example: calibra eval reward --model rm-tldr --data heldout.jsonl --json
    """
    from training.judges.jobs import evaluate_file

    payload = evaluate_file(open_context().transaction, kind, model, data, limit, progress=True)
    accuracy = "-" if payload["accuracy"] is None else f"{payload['accuracy']:.3f}"
    line = f"{model}: accuracy {accuracy} on {payload['pairs']} pairs of {data}"
    if not as_json:
        payload = {k: v for k, v in payload.items() if not isinstance(v, dict | list)}
    print_payload(payload, as_json)
    typer.echo(line, err=as_json)


@reports_errors
def score(
    model: Annotated[str, typer.Option(help="a registered reward or ranker version (name or id)")],
    documents: Annotated[str | None, typer.Option(help="document ids, e.g. 3,4,9 (default: every document)")] = None,
    limit: Annotated[int | None, typer.Option(help="at most this many documents")] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Score (reward model) or rank by tournament (ranking model) the candidates of documents
    and store a score and rank per candidate. Documents already scored by this version are
    skipped, so an interrupted run goes on where it stopped.

    Example: calibra score --model rm-tldr --limit 50
    """
    from training.judges.jobs import score_documents

    ids = _ids(documents, "--documents", "document ids")
    ctx = open_context()
    scored = score_documents(ctx.transaction, model, ids, limit)
    print_payload(scored, as_json)
    typer.echo(f"{scored['model']}: {scored['candidates_scored']} candidates of {scored['documents']} documents "
               f"scored and ranked in {describe(ctx.settings.database_url)}", err=as_json)


def register(cli: typer.Typer) -> None:
    cli.command("train")(train)
    cli.command("eval")(evaluate)
    cli.command("score")(score)
