"""Gold tasks: a known best answer, served like any other task, and each rater's accuracy on them."""
from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import case, func, select
from sqlalchemy.orm import Session

from annotate.errors import InvalidInput
from db.models import ComparisonTask, Judgement, Rater


@dataclass(frozen=True)
class GoldScore:
    rater: str
    judged: int
    correct: int

    @property
    def accuracy(self) -> float | None:
        return self.correct / self.judged if self.judged else None


def mark_gold(db: Session, task_id: int, candidate_id: int | None) -> ComparisonTask:
    """Make `candidate_id` the known best answer of a task (None: an ordinary task again)."""
    task = db.get(ComparisonTask, task_id)
    if task is None:
        raise InvalidInput(f"no task {task_id}", field="task")
    if candidate_id is not None and candidate_id not in task.candidate_ids:
        raise InvalidInput(f"candidate {candidate_id} is not in task {task_id} "
                           f"(its candidates: {', '.join(map(str, task.candidate_ids))})", field="candidate")
    task.gold_candidate_id = candidate_id
    db.flush()
    return task


def gold_scores(db: Session) -> list[GoldScore]:
    """Per rater: gold tasks judged and how many of them picked the known best answer."""
    correct = func.sum(case((Judgement.best_candidate_id == ComparisonTask.gold_candidate_id, 1), else_=0))
    rows = db.execute(
        select(Rater.name, func.count(Judgement.id), correct)
        .join(Judgement, Judgement.rater_id == Rater.id)
        .join(ComparisonTask, ComparisonTask.id == Judgement.task_id)
        .where(ComparisonTask.gold_candidate_id.is_not(None))
        .group_by(Rater.name).order_by(Rater.name))
    return [GoldScore(name, judged, int(right or 0)) for name, judged, right in rows]
