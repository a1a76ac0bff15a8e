"""The judges and the database: training pairs from the app's judgements, and the scores the
judges give to stored candidates."""
from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from annotate.export import ExportConfig, Filters, format_post, preference_pairs
from db.models import (
    Candidate,
    CandidateScore,
    ComparisonTask,
    Document,
    Judgement,
    ModelVersion,
)
from training.judges.candidate_ranking import ranking_scores
from training.judges.pairs import PreferencePair, pairs_from_rows

if TYPE_CHECKING:
    from training.judges.scalar_model import ScalarJudge


def pairs_from_database(db: Session, rounds: Sequence[int] | None = None, export: ExportConfig = ExportConfig(),
                        *, include_simulated: bool = False) -> tuple[list[PreferencePair], dict[str, Any]]:
    """The exported preference pairs of the chosen rounds (all when None), and a snapshot of
    the judgements they came from: id range, count, rounds and what the export left out."""
    frame, left_out = preference_pairs(db, export, Filters(include_simulated=include_simulated))
    if rounds:
        frame = frame[frame["round"].isin(list(rounds))]
    judged = select(func.min(Judgement.id), func.max(Judgement.id), func.count(Judgement.id)).join(
        ComparisonTask, ComparisonTask.id == Judgement.task_id)
    if rounds:
        judged = judged.where(ComparisonTask.round.in_(list(rounds)))
    first, last, count = db.execute(judged).one()
    snapshot = {"source": "database", "rounds": sorted(rounds) if rounds else "all", "judgement_id_min": first,
                "judgement_id_max": last, "judgements": count, "left_out": left_out}
    return pairs_from_rows(frame.to_dict("records")), snapshot


def documents_to_score(db: Session, version: ModelVersion, document_ids: Sequence[int] | None = None,
                       limit: int | None = None) -> list[tuple[Document, list[Candidate]]]:
    """Documents with text and two or more candidates the version has not scored yet (so an
    interrupted `calibra score` goes on where it stopped), with all their candidates."""
    scored = select(CandidateScore.candidate_id).where(CandidateScore.model_version_id == version.id)
    pending = select(Candidate.document_id).where(Candidate.id.not_in(scored)).distinct()
    query = select(Document).where(Document.id.in_(pending), Document.has_text.is_(True)).order_by(Document.id)
    if document_ids:
        query = query.where(Document.id.in_(list(document_ids)))
    if limit is not None:
        query = query.limit(limit)
    out = []
    for doc in db.scalars(query):
        cands = list(db.scalars(select(Candidate).where(Candidate.document_id == doc.id).order_by(Candidate.id)))
        if len(cands) >= 2:
            out.append((doc, cands))
    return out


def score_document(db: Session, judge: ScalarJudge, version: ModelVersion, doc: Document,
                   cands: Sequence[Candidate]) -> int:
    """Rank one document's candidates and store a score and rank for each; returns how many."""
    prompt = format_post(doc.subreddit, doc.title, doc.text)
    ranking = judge.rank(prompt, [c.text for c in cands])
    result = ranking_scores(ranking.best, [p.better for p in ranking.pairs], ranking.scores, [c.text for c in cands])
    ids = [c.id for c in cands]
    db.execute(delete(CandidateScore).where(CandidateScore.model_version_id == version.id,
                                            CandidateScore.candidate_id.in_(ids)))
    db.add_all(CandidateScore(candidate_id=cid, model_version_id=version.id, score=float(score), rank=rank)
               for cid, (score, rank) in zip(ids, result, strict=True))
    db.flush()
    return len(ids)


def mean_score_by_source(db: Session, version: ModelVersion) -> dict[str, float]:
    """A judge's mean score per candidate source (policy version name, or the reference)."""
    rows = db.execute(select(Candidate.origin, ModelVersion.name, func.avg(CandidateScore.score))
                      .join(Candidate, Candidate.id == CandidateScore.candidate_id)
                      .outerjoin(ModelVersion, ModelVersion.id == Candidate.model_version_id)
                      .where(CandidateScore.model_version_id == version.id)
                      .group_by(Candidate.origin, ModelVersion.name)).all()
    return {(name or origin.value): round(float(mean), 4) for origin, name, mean in rows}
