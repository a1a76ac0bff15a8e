"""Simulated raters: open tasks answered through the same queue and submission code as people.

A simulated rater orders the summaries it is shown by a scorer (summary length, chance, or a
trained judge: AI feedback), then picks the best, with two human failings on demand: `noise`
(a share of picks made at random) and `position_bias` (a share of picks that take whatever is
shown first). Its ratings follow its order (best 6, then 5, 4, 3). Simulated raters are marked
in the database, cannot log in, and their judgements stay out of the agreement report, the
export and training unless those are asked to include them.
"""
from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from annotate.errors import InvalidInput
from annotate.queue import QueuePolicy, next_assignment
from annotate.submissions import Submission, SummaryRating, submit
from annotate.tasks import TaskSpec, create_pair_tasks
from annotate.tldr_layout import format_post
from annotate.views import task_view
from db.engine import Transactions
from db.models import Candidate, CandidateOrigin, ComparisonTask, Document, Rater, Role

Scorer = Callable[[str, list[str]], list[float]]  # (post, summaries as shown) -> higher is better


@dataclass(frozen=True)
class SimulationSpec:
    raters: int = 3
    label: str = "length"  # names the raters: sim-<label>-<i>
    noise: float = 0.0
    position_bias: float = 0.0
    round: int | None = None  # only tasks of this round
    batch: str | None = None  # only tasks of this batch label
    seed: int = 0

    def __post_init__(self) -> None:
        if not 1 <= self.raters <= 100:
            raise InvalidInput("must be between 1 and 100", field="raters")
        for name in ("noise", "position_bias"):
            if not 0 <= getattr(self, name) <= 1:
                raise InvalidInput("must be between 0 and 1", field=name)


def length_scorer(post: str, texts: list[str]) -> list[float]:
    return [float(len(t.split())) for t in texts]


def random_scorer(seed: int) -> Scorer:
    rng = random.Random(seed)
    return lambda post, texts: [rng.random() for _ in texts]


def simulated_rater(db: Session, name: str) -> Rater:
    rater = db.scalar(select(Rater).where(Rater.name == name))
    if rater is None:
        rater = Rater(name=name, role=Role.ANNOTATOR, simulated=True, active=True)
        db.add(rater)
        db.flush()
    elif not rater.simulated:
        raise InvalidInput(f"{name!r} is a person's account, not a simulated rater", field="raters")
    return rater


def simulate(tx: Transactions, spec: SimulationSpec, score: Scorer) -> dict[str, int]:
    """Let the raters answer open tasks until none is left for any of them; one transaction per
    judgement, as a person's submit. Returns the number of judgements per rater."""
    rng = random.Random(spec.seed)
    names = [f"sim-{spec.label}-{i + 1}" for i in range(spec.raters)]
    with tx() as db:
        for name in names:
            simulated_rater(db, name)
    policy = QueuePolicy(gold_rate=0.0, round=spec.round, batch=spec.batch)
    done = dict.fromkeys(names, 0)
    active = list(names)
    while active:
        for name in list(active):
            with tx() as db:
                rater = simulated_rater(db, name)
                assignment = next_assignment(db, rater, policy, rng=rng)
                if assignment is None:
                    active.remove(name)
                    continue
                view = task_view(db, assignment)
                doc = db.get_one(Document, assignment.task.document_id)
                post = format_post(doc.subreddit, doc.title, doc.text)
                texts = [s.text for s in view.summaries]
                scores = score(post, texts)
                order = sorted(range(len(texts)), key=lambda i: -scores[i])
                best = order[0]
                if rng.random() < spec.position_bias:
                    best = 0
                elif rng.random() < spec.noise:
                    best = rng.randrange(len(texts))
                ranked = [best, *[i for i in order if i != best]]
                letters = [s.letter for s in view.summaries]
                ratings = {letters[i]: SummaryRating(max(1, 6 - k), True) for k, i in enumerate(ranked)}
                submit(db, view.assignment_id, rater,
                       Submission(best=letters[best], ratings=ratings, strength="better"))
                done[name] += 1
    return done


HISTORY_BATCH = "simulated-history"
HISTORY = SimulationSpec(raters=3, label="history", noise=0.25, position_bias=0.1, round=0, batch=HISTORY_BATCH)


def seed_history(tx: Transactions, *, source: str, documents: int = 15, spec: SimulationSpec = HISTORY
                 ) -> dict[str, int]:
    """A short, clearly simulated history for a new install, so the Dashboard and the Training
    page have something to show before anyone has judged: one pair task for each of the first
    `documents` documents of `source` (two of its sampled candidates, round `spec.round`, batch
    `spec.batch`), answered by the simulated raters (sim-history-1…), who prefer the longer
    summary, with noise and position bias. Answered, the tasks are full, so they leave every
    person's queue. Documents that have such a task already get none: running it again adds
    nothing."""
    with tx() as db:
        done = set(db.scalars(select(ComparisonTask.document_id).where(ComparisonTask.batch == spec.batch)))
        ids = db.scalars(select(Document.id).where(Document.source == source).order_by(Document.id).limit(documents))
        pairs = {}
        for document_id in ids:
            two = db.scalars(select(Candidate.id).where(Candidate.document_id == document_id,
                                                        Candidate.origin == CandidateOrigin.MODEL)
                             .order_by(Candidate.id).limit(2)).all()
            if document_id not in done and len(two) == 2:
                pairs[document_id] = (two[0], two[1])
        create_pair_tasks(db, TaskSpec(per_task=2, replication=spec.raters, round=spec.round, batch=spec.batch),
                          pairs)
    return simulate(tx, spec, length_scorer)
