"""The judges and the database: training pairs from the app's judgements, model versions for
trained judges, and the scores they give to stored candidates."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from annotate.export import ExportConfig, format_post, preference_pairs, repeats_layout
from db.models import (
    Candidate,
    CandidateScore,
    ComparisonTask,
    Document,
    Judgement,
    ModelKind,
    ModelVersion,
)
from training.preference_data import PreferencePair, pairs_from_rows
from training.ranker_model import PairwiseRanker
from training.ranking import Ranking, rank_by_scores, tournament
from training.reward_model import RewardScorer


def pairs_from_database(db: Session, rounds: Sequence[int] | None = None,
                        export: ExportConfig = ExportConfig()) -> tuple[list[PreferencePair], dict[str, Any]]:
    """The exported preference pairs of the chosen rounds (all when None), and a snapshot of
    the judgements they came from: id range, count, rounds and what the export left out."""
    frame, left_out = preference_pairs(db, export)
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


def register_judge(db: Session, kind: str, name: str, path: str, base_model: str, *, config: dict[str, Any],
                   metrics: dict[str, Any], snapshot: dict[str, Any], parent: ModelVersion | None,
                   round_: int | None = None) -> ModelVersion:
    if db.scalar(select(ModelVersion).where(ModelVersion.name == name)) is not None:
        raise ValueError(f"a model version named {name!r} exists already")
    version = ModelVersion(kind=ModelKind(kind), name=name, base_model=base_model, artifact_path=path,
                           parent_id=parent.id if parent else None, round=round_, data_snapshot=snapshot,
                           config=config, metrics=metrics)
    db.add(version)
    db.flush()
    return version


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


def rank_candidates(judge: RewardScorer | PairwiseRanker, prompt: str, texts: Sequence[str]) -> Ranking:
    """Reward model: score and sort. Ranking model: a tournament, m - 1 comparisons. Either way a
    candidate that repeats the prompt's layout ranks below every one that does not."""
    demoted = [repeats_layout(t) for t in texts]
    if isinstance(judge, RewardScorer):
        return rank_by_scores(judge.score([prompt] * len(texts), list(texts)), demoted)
    return tournament(len(texts), lambda games: judge.prefer([(prompt, texts[a], texts[b]) for a, b in games]),
                      demoted)


def ranking_scores(best: int, winners: Sequence[int], scores: Sequence[float] | None,
                   texts: Sequence[str]) -> list[tuple[float, int]]:
    """(score, rank) per candidate of a ranking: the reward itself, or else the number of
    comparisons won (`winners` holds the better side of each); rank 1 is `best`, and candidates
    that restate the prompt's layout come after all others, as in the ranking."""
    m = len(texts)
    if scores is not None:
        scores = list(scores)
    else:
        scores = [0.0] * m
        for i in winners:
            scores[i] += 1
    demoted = [repeats_layout(t) for t in texts]
    order = sorted(range(m), key=lambda i: (i != best, demoted[i], -scores[i]))
    ranks = {i: r + 1 for r, i in enumerate(order)}
    return [(scores[i], ranks[i]) for i in range(m)]


def score_document(db: Session, judge: RewardScorer | PairwiseRanker, version: ModelVersion, doc: Document,
                   cands: Sequence[Candidate]) -> int:
    """Rank one document's candidates and store a score and rank for each; returns how many."""
    prompt = format_post(doc.subreddit, doc.title, doc.text)
    ranking = rank_candidates(judge, prompt, [c.text for c in cands])
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
