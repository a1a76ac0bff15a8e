"""Counts of what the database holds, for `calibra status`."""
from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from db.models import (
    Candidate,
    ComparisonTask,
    Document,
    Judgement,
    ModelVersion,
    Rater,
)

COUNTED = {"documents": Document, "candidates": Candidate, "tasks": ComparisonTask,
           "judgements": Judgement, "raters": Rater, "model_versions": ModelVersion}


def counts(db: Session) -> dict[str, int]:
    return {name: db.scalar(select(func.count()).select_from(table)) or 0 for name, table in COUNTED.items()}
