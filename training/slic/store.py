"""A SLiC-HF round and the database: which documents, and the sampled candidates with their
ranks."""
from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.orm import Session

from db.models import Candidate, CandidateOrigin, CandidateScore, Document, ModelVersion
from training.candidates import store_samples
from training.generation import Sample
from training.judges.candidate_ranking import ranking_scores
from training.slic.data import RankedDocument, RoundDocument


def round_documents(db: Session, *, limit: int | None, split: str | None = None, offset: int = 0,
                    document_ids: Sequence[int] | None = None) -> list[RoundDocument]:
    """Documents with text (of `document_ids` when given), oldest first, keyed by id, with
    their human reference summary."""
    query = select(Document).where(Document.has_text.is_(True)).order_by(Document.id).offset(offset)
    if document_ids is not None:
        query = query.where(Document.id.in_(list(document_ids)))
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
