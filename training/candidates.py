"""Choose documents to sample for, and store what a model version generated for them."""
from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from db.models import Candidate, CandidateOrigin, Document, ModelVersion, digest
from training.generation import Sample
from training.prompts import DocPrompt


def documents_to_sample(db: Session, version: ModelVersion, *, limit: int | None, per_doc: int,
                        split: str | None = None, source: str | None = None) -> list[DocPrompt]:
    """Documents with text that have fewer than `per_doc` candidates from this version, oldest first.

    A run that was interrupted therefore picks up where it stopped.
    """
    have = (select(Candidate.document_id, func.count().label("n"))
            .where(Candidate.model_version_id == version.id).group_by(Candidate.document_id).subquery())
    query = (select(Document).outerjoin(have, have.c.document_id == Document.id)
             .where(Document.has_text.is_(True), func.coalesce(have.c.n, 0) < per_doc)
             .order_by(Document.id))
    if split is not None:
        query = query.where(Document.split == split)
    if source is not None:
        query = query.where(Document.source == source)
    if limit is not None:
        query = query.limit(limit)
    return [DocPrompt(d.id, d.text, d.title, d.subreddit) for d in db.scalars(query)]


def store_samples(db: Session, document_id: int, version: ModelVersion, samples: list[Sample],
                  decoding: dict[str, object]) -> int:
    """Add the samples that are new for this document; returns how many were added."""
    existing = set(db.scalars(select(Candidate.text_hash).where(Candidate.document_id == document_id)))
    added = 0
    for s in samples:
        key = digest(s.text)
        if key in existing:
            continue
        existing.add(key)
        db.add(Candidate(document_id=document_id, text=s.text, text_hash=key, origin=CandidateOrigin.MODEL,
                         model_version_id=version.id, decoding=decoding, token_count=s.token_count))
        added += 1
    db.flush()
    return added
