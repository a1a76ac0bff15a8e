"""The reward-hacking alarm: does the judge think the new policy beats the old one by more than
the people who judged their outputs do?

A promoted round sends the new policy's and the previous policy's summaries of fresh documents
to annotators (its `next_batch`). Once they have judged them, the human win rate of the new policy
over the previous one is compared with the win rate the round's judge predicts for the same
pairs. A judge that overrates the new policy by more than `hacking_alarm_gap`, with 95%
intervals that do not overlap, is being gamed (the case this project met: a reward model that
preferred restatements of the post). The alarm is recorded on the round and blocks automatic
promotion until an admin acknowledges it.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from annotate.export import format_post
from db.engine import Transactions
from db.models import CandidateRating, ComparisonTask, Document, Judgement, Rater, TrainingRound, utcnow
from training.errors import UsageError
from training.registry import find_version
from training.rounds.intervals import wilson
from training.rounds.store import find_round

Scorer = Callable[[str, list[str]], list[float]]  # (post, summaries) -> higher is better
MIN_VERDICTS = 10  # fewer human verdicts on the pairs say too little to raise an alarm


@dataclass(frozen=True)
class HackingCheck:
    judge: str
    predicted: float  # the judge's win rate of the new policy over the previous one
    predicted_interval: tuple[float, float]
    human: float  # the annotators' win rate on the same pairs
    human_interval: tuple[float, float]
    gap: float  # predicted - human
    alarm: bool
    pairs: int  # documents with both policies' summaries and at least one human verdict
    verdicts: int  # human judgements that order the two

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _verdict(best: int | None, quality: dict[int, int | None], new: int, old: int) -> float | None:
    """1 when a judgement puts the new policy's summary above the old one's, 0 below, None when
    it does not order them (another summary best and equal or missing ratings)."""
    if best == new:
        return 1.0
    if best == old:
        return 0.0
    q_new, q_old = quality.get(new), quality.get(old)
    if q_new is None or q_old is None or q_new == q_old:
        return None
    return float(q_new > q_old)


def human_pairs(db: Session, batch_round: int, new_id: int, old_id: int,
                include_simulated: bool) -> list[tuple[str, str, str, list[float]]]:
    """(post, new summary, old summary, verdicts) for each task of `batch_round` that shows both
    policies' summaries and has judgements that order them."""
    tasks = db.scalars(select(ComparisonTask).where(ComparisonTask.round == batch_round))
    out = []
    for task in tasks:
        by_version = {s.candidate.model_version_id: s.candidate for s in task.slots}
        new, old = by_version.get(new_id), by_version.get(old_id)
        if new is None or old is None:
            continue
        query = select(Judgement).join(Rater, Rater.id == Judgement.rater_id).where(
            Judgement.task_id == task.id, Judgement.all_unacceptable.is_(False))
        if not include_simulated:
            query = query.where(Rater.simulated.is_(False))
        verdicts = []
        for judgement in db.scalars(query):
            quality = dict(db.execute(select(CandidateRating.candidate_id, CandidateRating.quality)
                                      .where(CandidateRating.judgement_id == judgement.id)).all())
            verdict = _verdict(judgement.best_candidate_id, quality, new.id, old.id)
            if verdict is not None:
                verdicts.append(verdict)
        if verdicts:
            doc = db.get_one(Document, task.document_id)
            out.append((format_post(doc.subreddit, doc.title, doc.text), new.text, old.text, verdicts))
    return out


def compare(judge: str, pairs: list[tuple[str, str, str, list[float]]], score: Scorer,
            gap_limit: float) -> HackingCheck | None:
    """The judge's verdict on each pair beside the people's; None with too few human verdicts."""
    verdicts = [v for *_, vs in pairs for v in vs]
    if len(verdicts) < MIN_VERDICTS:
        return None
    predicted_wins = []
    for post, new, old, _ in pairs:
        s_new, s_old = score(post, [new, old])
        predicted_wins.append(1.0 if s_new > s_old else 0.5 if s_new == s_old else 0.0)
    predicted = sum(predicted_wins) / len(predicted_wins)
    human = sum(verdicts) / len(verdicts)
    p_low, p_high = wilson(predicted, len(predicted_wins))
    h_low, h_high = wilson(human, len(verdicts))
    gap = predicted - human
    return HackingCheck(judge, predicted, (p_low, p_high), human, (h_low, h_high), gap,
                        alarm=gap > gap_limit and p_low > h_high, pairs=len(pairs), verdicts=len(verdicts))


def round_versions(db: Session, number: int) -> tuple[int, int, str | None] | None:
    """The new and the previous policy a promoted round sent to annotators, and the judge that
    ranked its samples; None for a round that promoted nothing."""
    decision = find_round(db, number).decision or {}
    if not decision.get("promote"):
        return None
    new, old = find_version(db, decision["new"]), find_version(db, decision["current"])
    if new is None or old is None or new.id == old.id:
        return None
    return new.id, old.id, decision.get("ranking_judge")


def check_round(tx: Transactions, number: int, score: Scorer, judge: str, gap_limit: float,
                include_simulated: bool) -> dict[str, Any] | None:
    """Compare judge and people on round `number`'s batch and record the result on the round
    (an acknowledgement stays while the alarm does); None when there is nothing to compare yet."""
    with tx() as db:
        versions = round_versions(db, number)
        if versions is None:
            return None
        pairs = human_pairs(db, number + 1, versions[0], versions[1], include_simulated)
    result = compare(judge, pairs, score, gap_limit)
    if result is None:
        return None
    with tx() as db:
        round_ = find_round(db, number)
        decision = dict(round_.decision or {})
        record = result.as_dict()
        earlier = decision.get("reward_hacking") or {}
        if result.alarm and earlier.get("alarm") and earlier.get("acknowledged_by"):
            record.update(acknowledged_by=earlier["acknowledged_by"], acknowledged_at=earlier["acknowledged_at"])
        decision["reward_hacking"] = record
        round_.decision = decision
    return record


def open_alarms(db: Session) -> list[int]:
    """Rounds with a reward-hacking alarm no admin has acknowledged: automatic promotion waits."""
    rounds = db.scalars(select(TrainingRound).where(TrainingRound.decision.is_not(None)).order_by(TrainingRound.number))
    return [r.number for r in rounds
            if ((r.decision or {}).get("reward_hacking") or {}).get("alarm")
            and not r.decision["reward_hacking"].get("acknowledged_by")]  # type: ignore[index]


def acknowledge(db: Session, number: int, by: str) -> dict[str, Any]:
    """An admin has read the alarm of round `number` (recorded with who and when)."""
    round_ = find_round(db, number)
    decision = dict(round_.decision or {})
    record = dict(decision.get("reward_hacking") or {})
    if not record.get("alarm"):
        raise UsageError(f"round {number} has no reward-hacking alarm")
    record.update(acknowledged_by=by, acknowledged_at=utcnow().isoformat(timespec="seconds"))
    decision["reward_hacking"] = record
    round_.decision = decision
    return record

