"""`calibra train`, `calibra eval` and `calibra score`: the reward and ranking models."""
from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from tqdm import tqdm

from app.cli_support import CliError, print_payload, reports_errors
from app.context import Context, open_context

KIND_HELP = "reward (pointwise scalar head) | ranker (pairwise: document, A, B)"


def _kind(kind: str) -> str:
    if kind not in ("reward", "ranker"):
        raise CliError(f"unknown model kind {kind!r}; use reward or ranker")
    return kind


def _resolve_model(ctx: Context, ref: str) -> tuple[str, Any]:
    """A registered version (name or id) gives its artifact; anything else is a path or hub id."""
    from training.registry import find_version

    with ctx.transaction() as db:
        version = find_version(db, ref)
        if version is not None:
            return version.artifact_path or version.base_model, version
    return ref, None


def _rounds(text: str | None) -> list[int] | None:
    if not text:
        return None
    if not re.fullmatch(r"\d+(,\d+)*", text):
        raise CliError(f"--rounds must be round numbers separated by commas, got {text!r}")
    return [int(x) for x in text.split(",")]


@reports_errors
def train(
    kind: Annotated[str, typer.Argument(help=KIND_HELP)],
    data: Annotated[Path | None, typer.Option(help="prompt/chosen/rejected file (default: the app's judgements)")] = None,
    rounds: Annotated[str | None, typer.Option(help="with the database: rounds to train on, e.g. 1,2 (default all)")] = None,
    test_split: Annotated[str, typer.Option(help="auto | document | newest (the newest round held out)")] = "auto",
    test_fraction: Annotated[float, typer.Option(help="documents held out by a split by document")] = 0.2,
    margin: Annotated[str, typer.Option(help="none | small | large (Llama 2) | quality: margin inside the loss")] = "none",
    weighted: Annotated[bool, typer.Option(help="weight pairs by the export's agreement weights")] = False,
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
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Train a reward or ranking model, measure it on held-out documents and register it.

    An interrupted run resumes from its last checkpoint when the same command is run again.

    Examples:
      calibra train reward
      calibra train ranker --rounds 1,2 --init ranker-r1
      calibra train reward --data ../shared/data/tldr/pairs_train.jsonl --name rm-tldr
    """
    from annotate.export import ExportConfig
    from training.defaults import ENCODER
    from training.judge_store import pairs_from_database, register_judge
    from training.judge_config import JudgeConfig
    from training.judges import train_judge
    from training.loop import is_main_process
    from training.preference_data import read_pairs, split_by_document, split_newest_round

    kind = _kind(kind)
    ctx = open_context()
    overrides = {k: v for k, v in dict(epochs=epochs, learning_rate=learning_rate, max_length=max_length,
                                       batch_texts=batch_texts, grad_accum=grad_accum, lora_r=lora_r,
                                       freeze_layers=freeze_layers, read_post=read_post,
                                       head_learning_rate=head_learning_rate, seed=seed).items() if v is not None}
    try:
        export = ExportConfig(margin=margin)
        cfg = JudgeConfig(backbone=backbone or str(ENCODER.path(ctx.settings.models_dir)), test_fraction=test_fraction,
                          use_margin=margin != "none", use_weight=weighted, **overrides)
    except ValueError as exc:
        raise CliError(str(exc)) from None
    if data is not None:
        pairs, snapshot = read_pairs(data), {"source": str(data)}
    else:
        with ctx.transaction() as db:
            pairs, snapshot = pairs_from_database(db, _rounds(rounds), export)
        if not pairs:
            raise CliError("no preference pairs in the database yet (judge some tasks, or pass --data FILE)")
    multi_round = len({p.round for p in pairs if p.round is not None}) > 1
    split = ("newest" if multi_round else "document") if test_split == "auto" else test_split
    if split not in ("document", "newest"):
        raise CliError("--test-split must be auto, document or newest")
    try:
        train_pairs, test_pairs = (split_newest_round(pairs) if split == "newest"
                                   else split_by_document(pairs, cfg.test_fraction, cfg.seed))
    except ValueError as exc:
        raise CliError(str(exc)) from None
    init_path, parent = _resolve_model(ctx, init) if init else (None, None)
    name = name or f"{kind}-{datetime.now(UTC):%Y%m%d-%H%M%S}"
    out = ctx.settings.models_dir / "judges" / name
    with ctx.transaction() as db:
        from training.registry import find_version

        if find_version(db, name) is not None:
            raise CliError(f"a model version named {name!r} exists already; pick another --name")
    result = train_judge(kind, train_pairs, test_pairs, cfg, out=out, init=init_path,
                         extra={**snapshot, "split": split, "test_pairs": len(test_pairs)})
    if not is_main_process():  # `accelerate launch`: the main process registers what all of them trained
        return
    with ctx.transaction() as db:
        version = register_judge(db, kind, name, str(out), cfg.backbone, config=cfg.as_dict(),
                                 metrics={k: v for k, v in result.metrics.items() if k != "data_snapshot"},
                                 snapshot=result.metrics["data_snapshot"], parent=parent,
                                 round_=max((p.round for p in pairs if p.round is not None), default=None))
        version_id = version.id
    test = result.metrics.get("test", {})
    print_payload({"model_version": name, "id": version_id, "path": str(out), "train_pairs": len(train_pairs),
                   "test_pairs": len(test_pairs), "split": split, "accuracy": test.get("accuracy"),
                   "length_baseline_accuracy": test.get("length_baseline_accuracy"),
                   "similar_length_accuracy": test.get("similar_length_accuracy"),
                   "train_seconds": round(result.metrics["train_seconds"], 1)}, as_json)


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
    from training.judges import evaluate_judge, load_judge
    from training.preference_data import read_pairs

    kind = _kind(kind)
    pairs = read_pairs(data, limit)
    path, _ = _resolve_model(open_context(), model)
    try:
        judge = load_judge(kind, path)
    except ValueError as exc:
        raise CliError(str(exc)) from None
    metrics = evaluate_judge(judge, pairs)
    payload = {"model": model, "data": str(data), **metrics}
    if not as_json:
        payload = {k: v for k, v in payload.items() if not isinstance(v, dict | list)}
    print_payload(payload, as_json)


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
    from training.judge_store import documents_to_score, mean_score_by_source, score_document
    from training.judges import load_judge

    ctx = open_context()
    path, version = _resolve_model(ctx, model)
    if version is None or version.kind.value not in ("reward", "ranker"):
        raise CliError(f"{model!r} is not a registered reward or ranker version; see `calibra models list`")
    judge = load_judge(version.kind.value, path)
    with ctx.transaction() as db:
        work = documents_to_score(db, version, _rounds(documents), limit)
    stored = 0
    with tqdm(total=len(work), desc=f"scoring with {version.name}", unit="doc") as bar:
        for doc, cands in work:
            with ctx.transaction() as db:  # each document's scores are kept if the run stops
                stored += score_document(db, judge, version, db.merge(doc), cands)
            bar.update()
    with ctx.transaction() as db:
        means = mean_score_by_source(db, version)
    print_payload({"model": version.name, "documents": len(work), "candidates_scored": stored,
                   "mean_score_by_source": means}, as_json)


def register(cli: typer.Typer) -> None:
    cli.command("train")(train)
    cli.command("eval")(evaluate)
    cli.command("score")(score)
