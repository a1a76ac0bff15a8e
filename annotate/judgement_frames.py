"""Judgements as pandas tables, the one place the agreement report reads the database.

- `judgements`: one row per judgement (rater, task, round, time, the best choice, its displayed
  position, and its slot: its place among the task's candidates in id order, the same for all
  raters, which is what agreement on the best choice compares);
- `shown`: one row per summary shown in a judgement (position, source, length);
- `ratings`: one row per per-summary rating;
- `skips`: one row per skipped assignment.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from itertools import chain
from typing import Any

import numpy as np
import pandas as pd
from sqlalchemy import ColumnElement, Connection, Select, SQLColumnExpression, func, select
from sqlalchemy.orm import Session

from db.models import (
    Assignment,
    AssignmentStatus,
    Candidate,
    CandidateOrigin,
    CandidateRating,
    ComparisonTask,
    Judgement,
    ModelVersion,
    Rater,
    TaskCandidate,
)


@dataclass(frozen=True)
class Filters:
    round: int | None = None
    rater: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    after_judgement: int | None = None  # only judgements with a larger id (a round's new batch)
    upto_judgement: int | None = None  # only judgements up to this id (a round's snapshot)
    include_simulated: bool = False  # simulated raters' judgements (`calibra simulate`)


@dataclass(frozen=True)
class Frames:
    judgements: pd.DataFrame
    shown: pd.DataFrame
    ratings: pd.DataFrame
    skips: pd.DataFrame


HUMAN_REFERENCE = "human reference"  # what a reference summary is compared as; model versions by name


def _conditions(filters: Filters) -> list[ColumnElement[bool]]:
    conds: list[ColumnElement[bool]] = []
    if filters.round is not None:
        conds.append(ComparisonTask.round == filters.round)
    if filters.rater is not None:
        conds.append(Rater.name == filters.rater)
    if filters.since is not None:
        conds.append(Judgement.created_at >= filters.since)
    if filters.until is not None:
        conds.append(Judgement.created_at < filters.until)
    if filters.after_judgement is not None:
        conds.append(Judgement.id > filters.after_judgement)
    if filters.upto_judgement is not None:
        conds.append(Judgement.id <= filters.upto_judgement)
    if not filters.include_simulated:
        conds.append(Rater.simulated.is_(False))
    return conds


def _joined(*columns: SQLColumnExpression[Any]) -> Select[*tuple[Any, ...]]:
    return (select(*columns).join(Rater, Rater.id == Judgement.rater_id)
            .join(ComparisonTask, ComparisonTask.id == Judgement.task_id)
            .join(Assignment, Assignment.id == Judgement.assignment_id))


def _fetch(conn: Connection, stmt: Select[*tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """Rows straight from the driver's cursor.

    Bulk reads of 100k+ rows spend most of their time turning driver tuples into result rows;
    the values here are plain (ids, numbers, strings), so the driver's tuples serve as they are.
    JSON and date columns arrive as the driver gives them (text on SQLite) and are decoded by
    the caller.
    """
    compiled = stmt.compile(dialect=conn.dialect)
    params = [compiled.params[k] for k in compiled.positiontup or ()] if compiled.positional else compiled.params
    driver = conn.connection.driver_connection
    assert driver is not None, "the connection was invalidated"
    cursor = driver.cursor()
    try:
        cursor.execute(str(compiled), params)
        return cursor.fetchall()
    finally:
        cursor.close()


def _orders(values: list[Any]) -> list[list[int]]:
    """Display orders, decoded from JSON text (SQLite) in one parse of one joined string: a
    hundred thousand small `json.loads` calls cost ten times more."""
    if values and isinstance(values[0], str):
        return json.loads("[" + ",".join(values) + "]")
    return values


def load_frames(db: Session, filters: Filters = Filters()) -> Frames:
    conds = _conditions(filters)
    conn = db.connection()
    rows = _fetch(conn, _joined(
        Judgement.id, Judgement.task_id, Rater.name, ComparisonTask.round, Judgement.created_at,
        Judgement.time_taken_s, Judgement.best_candidate_id, Judgement.all_unacceptable, Judgement.strength,
        ComparisonTask.gold_candidate_id, Assignment.display_order).where(*conds))
    judgements = pd.DataFrame([row[:-1] for row in rows], columns=[
        "judgement_id", "task_id", "rater", "round", "created_at", "seconds", "best", "all_unacceptable",
        "strength", "gold"])
    judgements["created_at"] = pd.to_datetime(judgements.created_at)
    judgements["all_unacceptable"] = judgements.all_unacceptable.astype(bool)
    # One row per summary shown, built with array operations rather than per-row Python.
    orders = _orders([row[-1] for row in rows])
    lengths = np.fromiter((len(o) for o in orders), dtype=np.int64, count=len(orders))
    flat = np.fromiter(chain.from_iterable(orders), dtype=np.int64, count=int(lengths.sum()))
    starts = np.repeat(np.cumsum(lengths) - lengths, lengths)
    shown = pd.DataFrame({"judgement_id": np.repeat(judgements.judgement_id.to_numpy(), lengths),
                          "candidate_id": flat, "position": np.arange(len(flat)) - starts})
    best = np.repeat(judgements.best.to_numpy(dtype=float), lengths)
    is_best = shown.candidate_id.to_numpy() == best
    judgements["best_position"] = judgements.judgement_id.map(
        shown.loc[is_best].set_index("judgement_id").position).astype("Int64")
    # the slot: the best's place among the task's candidates in id order, the same for every rater
    below = pd.Series(shown.candidate_id.to_numpy() < best).groupby(shown.judgement_id.to_numpy()).sum()
    judgements["best_slot"] = judgements.judgement_id.map(below).where(judgements.best_position.notna()).astype("Int64")
    judgements["n_shown"] = lengths
    selected = _joined(Judgement.id).where(*conds).scalar_subquery()
    in_tasks = (select(TaskCandidate.candidate_id).join(Judgement, Judgement.task_id == TaskCandidate.task_id)
                .where(Judgement.id.in_(selected)))
    # Words counted in SQL (spaces + 1, on both SQLite and PostgreSQL): no texts are transferred.
    words = func.length(Candidate.text) - func.length(func.replace(Candidate.text, " ", "")) + 1
    cands = pd.DataFrame(_fetch(conn, select(Candidate.id, Candidate.origin, ModelVersion.name, words)
                                .outerjoin(ModelVersion, ModelVersion.id == Candidate.model_version_id)
                                .where(Candidate.id.in_(in_tasks))),
                         columns=["candidate_id", "origin", "version", "words"])
    cands["source"] = np.where(
        (cands.origin == CandidateOrigin.MODEL.value) & cands.version.notna(), cands.version,
        np.where(cands.origin == CandidateOrigin.REFERENCE.value, HUMAN_REFERENCE, "imported"))
    cands = cands[["candidate_id", "source", "words"]]
    shown = shown.merge(cands, on="candidate_id", how="left")
    ratings = pd.DataFrame(
        _fetch(conn, select(CandidateRating.judgement_id, CandidateRating.candidate_id, CandidateRating.quality,
                            CandidateRating.factual).where(CandidateRating.judgement_id.in_(selected))),
        columns=["judgement_id", "candidate_id", "quality", "factual"])
    # SQLite gives 0/1 and PostgreSQL booleans; a dict lookup would miss the booleans (pandas
    # matches keys by dtype), so each value is converted by itself.
    ratings["factual"] = ratings.factual.map(lambda v: None if v is None or pd.isna(v) else bool(v))
    skip_query = (select(Rater.name, Assignment.completed_at).join(Rater, Rater.id == Assignment.rater_id)
                  .where(Assignment.status == AssignmentStatus.SKIPPED))
    if filters.rater is not None:
        skip_query = skip_query.where(Rater.name == filters.rater)
    if not filters.include_simulated:
        skip_query = skip_query.where(Rater.simulated.is_(False))
    skips = pd.DataFrame([tuple(r) for r in conn.execute(skip_query)], columns=["rater", "completed_at"])
    return Frames(judgements, shown, ratings, skips)
