"""A SLiC-HF round and the database: which documents, the sampled candidates and their
ranks, and the new policy version."""
from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from db.models import Candidate, CandidateOrigin, CandidateScore, Document, ModelKind, ModelStatus, ModelVersion
from training.generation import Sample
from training.candidates import store_samples
from training.judge_store import ranking_scores
from training.slic_data import RankedDocument, RoundDocument


def round_documents(db: Session, *, limit: int | None, split: str | None = None,
                    offset: int = 0) -> list[RoundDocument]:
    """Documents with text, oldest first, keyed by id, with their human reference summary."""
    query = select(Document).where(Document.has_text.is_(True)).order_by(Document.id).offset(offset)
    if split is not None:
        query = query.where(Document.split == split)
    if limit is not None:
        query = query.limit(limit)
    docs = list(db.scalars(query))
    refs = dict(db.execute(select(Candidate.document_id, Candidate.text).where(
        Candidate.document_id.in_([d.id for d in docs]), Candidate.origin == CandidateOrigin.REFERENCE)).all())
    return [RoundDocument(str(d.id), d.text, d.title, d.subreddit, d.reference_summary or refs.get(d.id)) for d in docs]


def store_ranked(db: Session, policy: ModelVersion, judge: ModelVersion | None, record: RankedDocument,
                 decoding: dict[str, object]) -> int:
    """The sampled candidates as the policy's candidates (so they can go to annotators), and the
    judge's verdict on each: the reward, or tournament wins, and the rank (1 = best)."""
    document_id = int(record.document.key)
    store_samples(db, document_id, policy, [Sample(t, 0) for t in record.candidates], decoding)
    if judge is None:
        return 0
    ids = dict(db.execute(select(Candidate.text, Candidate.id).where(Candidate.document_id == document_id)).all())
    verdicts = ranking_scores(record.best, [better for better, _, _ in record.pairs], record.scores or None,
                              record.candidates)
    stored = 0
    for text, (score, rank) in zip(record.candidates, verdicts, strict=True):
        cid = ids.get(text)
        if cid is None or db.scalar(select(CandidateScore.id).where(
                CandidateScore.candidate_id == cid, CandidateScore.model_version_id == judge.id)) is not None:
            continue
        db.add(CandidateScore(candidate_id=cid, model_version_id=judge.id, score=float(score), rank=rank))
        stored += 1
    db.flush()
    return stored


def register_policy(db: Session, name: str, parent: ModelVersion, adapter: str, *, round_: int,
                    config: dict[str, Any], metrics: dict[str, Any], snapshot: dict[str, Any],
                    activate: bool = False) -> ModelVersion:
    """The trained adapter as a new policy version on the parent's base model; activating it
    retires the previous active policy, so new samples come from it."""
    if db.scalar(select(ModelVersion).where(ModelVersion.name == name)) is not None:
        raise ValueError(f"a model version named {name!r} exists already")
    version = ModelVersion(kind=ModelKind.POLICY, name=name, base_model=parent.base_model, artifact_path=adapter,
                           parent_id=parent.id, round=round_, config=config, metrics=metrics, data_snapshot=snapshot,
                           status=ModelStatus.REGISTERED)
    db.add(version)
    db.flush()
    if activate:
        activate_policy(db, version)
    return version


def activate_policy(db: Session, version: ModelVersion) -> None:
    for other in db.scalars(select(ModelVersion).where(ModelVersion.kind == ModelKind.POLICY,
                                                       ModelVersion.status == ModelStatus.ACTIVE)):
        other.status = ModelStatus.RETIRED
    version.status = ModelStatus.ACTIVE
    db.flush()
