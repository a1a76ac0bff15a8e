"""Settling judge-versus-human disagreements (found by the weekly loop's judges stage).

An admin reads the document, the summaries, the votes and the judge's confidence, and decides:
the humans were right (the task becomes a gold task with their choice), the judge was right (the
raters of the majority are noted on the item, and `rater_notes` counts them), or it is unclear.
"""
from __future__ import annotations

from collections import Counter
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from annotate.errors import InvalidInput
from annotate.gold import mark_gold
from db.models import Candidate, ComparisonTask, DisagreementReview, Document, ReviewVerdict, utcnow

VERDICTS = tuple(v.value for v in ReviewVerdict if v != ReviewVerdict.OPEN)


def review_items(db: Session, *, verdict: str = ReviewVerdict.OPEN.value, limit: int = 50) -> list[dict[str, Any]]:
    """Items with one verdict (open by default), most confident first: the document, every
    summary with its votes and the judge's P(summary > the humans' choice)."""
    items = db.scalars(select(DisagreementReview).where(DisagreementReview.verdict == ReviewVerdict(verdict))
                       .order_by(DisagreementReview.confidence.desc(), DisagreementReview.id).limit(limit))
    out = []
    for item in items:
        task = db.get_one(ComparisonTask, item.task_id)
        doc = db.get_one(Document, task.document_id)
        summaries = []
        for slot in task.slots:
            cand = db.get_one(Candidate, slot.candidate_id)
            key = str(cand.id)
            summaries.append({"candidate_id": cand.id, "text": cand.text, "votes": item.votes.get(key, 0),
                              "judge_p_over_humans_choice": item.scores.get(key),
                              "humans_choice": cand.id == item.human_choice_id,
                              "judges_choice": cand.id == item.judge_choice_id})
        out.append({"id": item.id, "round": item.round, "task_id": item.task_id, "judge": item.judge,
                    "confidence": item.confidence, "title": doc.title, "document": doc.text,
                    "summaries": summaries, "raters": item.raters, "verdict": item.verdict.value,
                    "decided_by": item.decided_by})
    return out


def settle(db: Session, item_id: int, verdict: str, by: str) -> DisagreementReview:
    """Record an admin's verdict on an item; `humans_right` makes the task a gold task."""
    if verdict not in VERDICTS:
        raise InvalidInput(f"must be one of {', '.join(VERDICTS)}", field="verdict")
    item = db.get(DisagreementReview, item_id)
    if item is None:
        raise InvalidInput(f"no review item {item_id}", field="item")
    if item.verdict != ReviewVerdict.OPEN:
        raise InvalidInput(f"item {item_id} was settled already ({item.verdict.value} by {item.decided_by})",
                           field="item")
    if verdict == ReviewVerdict.HUMANS_RIGHT.value:
        mark_gold(db, item.task_id, item.human_choice_id)
    item.verdict, item.decided_by, item.decided_at = ReviewVerdict(verdict), by, utcnow()
    db.flush()
    return item


def rater_notes(db: Session) -> dict[str, int]:
    """How often each rater was in a majority that an admin found the judge right against."""
    rows = db.scalars(select(DisagreementReview.raters).where(
        DisagreementReview.verdict == ReviewVerdict.JUDGE_RIGHT))
    return dict(Counter(name for raters in rows for name in raters))
