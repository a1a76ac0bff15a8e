"""The judges' use cases, one function each, called alike by the CLI, the round worker and the
admin page: train and register a judge, measure one on a file, score stored candidates.

Each takes `tx` (a way to open one short transaction at a time) rather than a session, since
training runs for minutes and must not hold the database meanwhile.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from annotate.export import ExportConfig
from db.engine import Transactions
from db.models import ModelKind, ModelVersion
from training.defaults import ENCODER
from training.errors import UsageError
from training.judges.candidate_ranking import ranking_scores
from training.judges.config import JudgeConfig
from training.judges.pairs import PreferencePair, read_pairs, split_by_document, split_newest_round
from training.judges.scalar_model import ScalarJudge
from training.judges.store import documents_to_score, mean_score_by_source, pairs_from_database, score_document
from training.judges.trainer import KINDS, JudgeResult, evaluate_judge, load_judge, train_judge
from training.registry import JUDGE_KINDS, check_name_free, find_version, register_version, resolve_version
from training.training_run import logs_entry, logs_note

SPLITS = ("auto", "document", "newest")


@dataclass(frozen=True)
class JudgeTrainSpec:
    """What `calibra train` is asked: which judge, on which data, split how, from where."""

    kind: str
    data: Path | None = None  # a prompt/chosen/rejected file; None: the app's judgements
    test_data: Path | None = None  # held-out pairs of its own (a round's newest batch): no split then
    rounds: Sequence[int] | None = None  # with the database: only these rounds
    test_split: str = "auto"  # auto | document | newest
    margin: str = "none"  # the export's margin, used inside the loss when not "none"
    weighted: bool = False
    include_simulated: bool = False  # with the database: simulated raters' judgements too
    init: str | None = None  # warm start: a version (name or id) or a folder
    name: str | None = None  # default: KIND-DATE
    settings: dict[str, Any] = field(default_factory=dict)  # JudgeConfig fields (epochs, backbone, ...)
    round: int | None = None  # the round the version belongs to (default: the newest round in its data)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise UsageError(f"unknown model kind {self.kind!r}; use reward or ranker")
        if self.test_split not in SPLITS:
            raise UsageError("--test-split must be auto, document or newest")

    def config(self, models_dir: Path) -> JudgeConfig:
        try:
            return JudgeConfig(**{"backbone": str(ENCODER.path(models_dir)), **self.settings},
                               use_margin=self.margin != "none", use_weight=self.weighted)
        except (TypeError, ValueError) as exc:
            raise UsageError(str(exc)) from None

    def export(self) -> ExportConfig:
        try:
            return ExportConfig(margin=self.margin)
        except ValueError as exc:
            raise UsageError(str(exc)) from None


@dataclass(frozen=True)
class TrainedJudge:
    """A registered judge and what its training measured."""

    version_id: int
    name: str
    path: Path
    split: str
    train_pairs: int
    test_pairs: int
    metrics: dict[str, Any]

    def summary(self) -> dict[str, Any]:
        """The fields `calibra train --json` prints."""
        test = self.metrics.get("test", {})
        return {"model_version": self.name, "id": self.version_id, "path": str(self.path),
                "train_pairs": self.train_pairs, "test_pairs": self.test_pairs, "split": self.split,
                "accuracy": test.get("accuracy"), "length_baseline_accuracy": test.get("length_baseline_accuracy"),
                "similar_length_accuracy": test.get("similar_length_accuracy"),
                "train_seconds": round(self.metrics["train_seconds"], 1),
                **logs_entry(self.metrics)}

    def line(self) -> str:
        """What `calibra train` ends with: the version, how it did on held-out pairs, where it is."""
        accuracy = self.metrics.get("test", {}).get("accuracy")
        measured = ("no held-out pairs" if accuracy is None
                    else f"held-out accuracy {accuracy:.2f} on {self.test_pairs} pairs")
        return f"registered {self.name} ({measured}) at {self.path}{logs_note(self.metrics.get('logs'))}"


def judge_source(tx: Transactions, ref: str) -> tuple[str, ModelVersion | None]:
    """A registered version (name or id) gives its artifact; anything else is a folder or hub id."""
    with tx() as db:
        version = find_version(db, ref)
        if version is None:
            return ref, None
        db.expunge(version)
        return version.artifact_path or version.base_model, version


def training_pairs(tx: Transactions, spec: JudgeTrainSpec) -> tuple[list[PreferencePair], dict[str, Any]]:
    """The pairs a judge learns from, and the snapshot of where they came from."""
    if spec.data is not None:
        return read_pairs(spec.data), {"source": str(spec.data)}
    with tx() as db:
        pairs, snapshot = pairs_from_database(db, spec.rounds, spec.export(), include_simulated=spec.include_simulated)
    if not pairs:
        raise UsageError("no preference pairs in the database yet (judge some tasks, or pass --data FILE)")
    return pairs, snapshot


def split_pairs(pairs: Sequence[PreferencePair], split: str, cfg: JudgeConfig
                ) -> tuple[str, list[PreferencePair], list[PreferencePair]]:
    """(split used, train, test): `auto` holds out the newest round when there are several
    (Llama 2's habit), otherwise a share of the documents."""
    if split == "auto":
        split = "newest" if len({p.round for p in pairs if p.round is not None}) > 1 else "document"
    try:
        train, test = (split_newest_round(pairs) if split == "newest"
                       else split_by_document(pairs, cfg.test_fraction, cfg.seed))
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    return split, train, test


def train_and_register(tx: Transactions, spec: JudgeTrainSpec, models_dir: Path, *, progress: bool = True,
                       on_step: Callable[[int, int, float], bool] | None = None) -> TrainedJudge | None:
    """Train the judge `spec` asks for, measure it on held-out documents, save it under
    `<models>/judges/NAME` and register it with its data snapshot and parent. None in the extra
    processes of `accelerate launch`: the main process alone registers what they trained."""
    cfg = spec.config(models_dir)
    pairs, snapshot = training_pairs(tx, spec)
    if spec.test_data is not None:
        split, train, test = "given", pairs, read_pairs(spec.test_data)
    else:
        split, train, test = split_pairs(pairs, spec.test_split, cfg)
    init, parent = judge_source(tx, spec.init) if spec.init else (None, None)
    name = spec.name or f"{spec.kind}-{datetime.now(UTC):%Y%m%d-%H%M%S}"
    with tx() as db:
        check_name_free(db, name)
    out = models_dir / "judges" / name
    result: JudgeResult = train_judge(spec.kind, train, test, cfg, out=out, init=init, progress=progress,
                                      extra={**snapshot, "split": split, "test_pairs": len(test)}, on_step=on_step)
    if result.path is None:  # an extra process of `accelerate launch`, or stopped by `on_step`
        return None
    metrics = {k: v for k, v in result.metrics.items() if k != "data_snapshot"}
    with tx() as db:
        version = register_version(db, ModelKind(spec.kind), name, cfg.backbone, str(out),
                                   parent=db.merge(parent) if parent else None,
                                   round_=spec.round if spec.round is not None else
                                   max((p.round for p in pairs if p.round is not None), default=None),
                                   config=cfg.as_dict(), metrics=metrics, snapshot=result.metrics["data_snapshot"])
        version_id = version.id
    return TrainedJudge(version_id, name, out, split, len(train), len(test), metrics)


def evaluate_file(tx: Transactions, kind: str, model: str, data: Path, limit: int | None = None, *,
                  progress: bool = False) -> dict[str, Any]:
    """A judge's pairwise accuracy and the rest of `pair_metrics` on any prompt/chosen/rejected file."""
    if kind not in KINDS:
        raise UsageError(f"unknown model kind {kind!r}; use reward or ranker")
    pairs = read_pairs(data, limit)
    path, _ = judge_source(tx, model)
    try:
        judge = load_judge(kind, path)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    return {"model": model, "data": str(data), **evaluate_judge(judge, pairs, progress=progress)}


def score_documents(tx: Transactions, model: str, document_ids: Sequence[int] | None = None,
                    limit: int | None = None, *, progress: bool = True) -> dict[str, Any]:
    """Rank the candidates of each document not yet scored by this judge and store a score and
    rank per candidate, a document per transaction (an interrupted run keeps what it did)."""
    with tx() as db:
        version = resolve_version(db, model, JUDGE_KINDS)
        work = documents_to_score(db, version, document_ids, limit)
        db.expunge_all()
    judge = load_judge(version.kind.value, version.artifact_path or version.base_model)
    stored = 0
    with tqdm(total=len(work), desc=f"scoring with {version.name}", unit="doc", disable=not progress) as bar:
        for doc, cands in work:
            with tx() as db:
                stored += score_document(db, judge, version, db.merge(doc), cands)
            bar.update()
    with tx() as db:
        means = mean_score_by_source(db, version)
    return {"model": version.name, "documents": len(work), "candidates_scored": stored,
            "mean_score_by_source": means}


def load_version(tx: Transactions, model: str) -> ScalarJudge:
    """A registered judge (name or id), loaded to score."""
    with tx() as db:
        version = resolve_version(db, model, JUDGE_KINDS)
        kind, path = version.kind.value, version.artifact_path or version.base_model
    return load_judge(kind, path)


def judge_scorer(tx: Transactions, model: str) -> Callable[[str, list[str]], list[float]]:
    """A trained judge as a simulated rater's scorer (AI feedback): the summaries of a post in
    the order it ranks them, best first (a score of minus the rank)."""
    judge = load_version(tx, model)

    def score(post: str, texts: list[str]) -> list[float]:
        ranking = judge.rank(post, texts)
        return [-float(rank) for _, rank in ranking_scores(ranking.best, [p.better for p in ranking.pairs],
                                                            ranking.scores, texts)]
    return score
