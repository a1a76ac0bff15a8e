"""Judge-versus-human disagreements worth an admin's look: tasks where the round's judge is
confident (P >= 0.8) that another summary beats the one most raters chose.

Each becomes a review item; an admin settles it on the Training page (`annotate.review`). Either
the people were right (the task becomes a gold task, which trains raters' accuracy figures and
tells the next judge the truth), or the judge was (the raters are noted), or it is unclear.
"""
from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from annotate.export import format_post
from db.engine import Transactions
from db.models import (
    ComparisonTask,
    DisagreementReview,
    Document,
    Judgement,
    Rater,
    ReviewVerdict,
)

Prefer = Callable[[Sequence[tuple[str, str, str]]], Sequence[float]]  # (post, a, b) -> P(a > b)
CONFIDENT = 0.8


def human_majorities(db: Session, *, after: int | None, upto: int,
                     include_simulated: bool) -> dict[int, tuple[int, dict[int, int], list[str]]]:
    """Per task judged in the id range: the candidate most raters chose best (ties: none), the
    votes, and the names of who chose it."""
    query = (select(Judgement.task_id, Judgement.best_candidate_id, Rater.name)
             .join(Rater, Rater.id == Judgement.rater_id)
             .where(Judgement.id <= upto, Judgement.best_candidate_id.is_not(None)))
    if after is not None:
        query = query.where(Judgement.id > after)
    if not include_simulated:
        query = query.where(Rater.simulated.is_(False))
    votes: dict[int, Counter[int]] = defaultdict(Counter)
    voters: dict[tuple[int, int], list[str]] = defaultdict(list)
    for task_id, best, rater in db.execute(query):
        assert best is not None  # the query keeps judgements with a best choice
        votes[task_id][best] += 1
        voters[(task_id, best)].append(rater)
    out = {}
    for task_id, counts in votes.items():
        (top, n), *rest = counts.most_common()
        if not rest or rest[0][1] < n:
            out[task_id] = (top, dict(counts), voters[(task_id, top)])
    return out


def find_disagreements(tx: Transactions, judge: str, prefer: Prefer, *, round_: int, after: int | None, upto: int,
                       include_simulated: bool, threshold: float = CONFIDENT) -> int:
    """Add a review item for every task of the judgement range where `judge` gives another
    summary P >= `threshold` of beating the humans' majority; how many were added."""
    with tx() as db:
        majorities = human_majorities(db, after=after, upto=upto, include_simulated=include_simulated)
        seen = set(db.scalars(select(DisagreementReview.task_id).where(DisagreementReview.judge == judge)))
        work = []
        for task_id, (human, votes, raters) in majorities.items():
            task = db.get_one(ComparisonTask, task_id)
            if task_id in seen or task.gold_candidate_id is not None:
                continue
            doc = db.get_one(Document, task.document_id)
            texts = {s.candidate_id: s.candidate.text for s in task.slots}
            work.append((task_id, format_post(doc.subreddit, doc.title, doc.text), texts, human, votes, raters))
    comparisons = [(post, texts[c], texts[human]) for _, post, texts, human, *_ in work for c in texts if c != human]
    probabilities = iter(prefer(comparisons) if comparisons else [])
    added = 0
    with tx() as db:
        for task_id, _, texts, human, votes, raters in work:
            scores = {c: float(next(probabilities)) for c in texts if c != human}
            rival = max(scores, key=lambda c: scores[c])
            if scores[rival] < threshold:
                continue
            db.add(DisagreementReview(task_id=task_id, round=round_, judge=judge, human_choice_id=human,
                                      judge_choice_id=rival, confidence=scores[rival],
                                      votes={str(k): v for k, v in votes.items()},
                                      scores={str(k): v for k, v in scores.items()}, raters=raters))
            added += 1
    return added


def review_counts(db: Session) -> dict[int, dict[str, int]]:
    """Per round: review items by verdict (open, humans_right, judge_right, unclear)."""
    out: dict[int, dict[str, int]] = defaultdict(dict)
    rows = db.execute(select(DisagreementReview.round, DisagreementReview.verdict, func.count())
                      .group_by(DisagreementReview.round, DisagreementReview.verdict))
    for number, verdict, n in rows:
        out[number][ReviewVerdict(verdict).value] = n
    return dict(out)


def counts_line(counts: dict[str, Any] | None) -> str | None:
    if not counts:
        return None
    return ", ".join(f"{n} {verdict.replace('_', ' ')}" for verdict, n in sorted(counts.items()))
