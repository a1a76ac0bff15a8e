"""Reliability matrices (rater x unit) built from stored judgements, for the agreement metrics."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session

from db.models import CandidateRating, Judgement, Rater

SCALES = {"quality": CandidateRating.quality, "factual": CandidateRating.factual}


@dataclass(frozen=True)
class Reliability:
    matrix: np.ndarray  # raters x units, NaN where a rater did not rate a unit
    raters: list[str]
    units: list[int]  # candidate ids


def candidate_ratings(db: Session, scale: str) -> Reliability:
    """Every rater's rating of every candidate on `scale` (quality 1-7, or factual as 0/1).

    A rater who met the same candidate in two tasks (a reference summary can anchor several)
    counts once, with the first rating given.
    """
    column = SCALES[scale]
    rows = db.execute(select(Rater.name, CandidateRating.candidate_id, column)
                      .join(Judgement, Judgement.id == CandidateRating.judgement_id)
                      .join(Rater, Rater.id == Judgement.rater_id)
                      .where(column.is_not(None)).order_by(CandidateRating.id))
    raters: dict[str, int] = {}
    units: dict[int, int] = {}
    cells: dict[tuple[int, int], float] = {}
    for name, candidate_id, value in rows:
        key = (raters.setdefault(name, len(raters)), units.setdefault(candidate_id, len(units)))
        cells.setdefault(key, float(value))
    matrix = np.full((len(raters), len(units)), np.nan)
    for (r, u), value in cells.items():
        matrix[r, u] = value
    return Reliability(matrix, list(raters), list(units))
