"""Build comparison tasks of 2-4 candidates per document."""
from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import exists, select
from sqlalchemy.orm import Session

from annotate.errors import InvalidInput
from db.models import (
    Candidate,
    CandidateOrigin,
    ComparisonTask,
    Document,
    TaskCandidate,
    digest,
)
from db.statistics import refresh_statistics

MIN_CANDIDATES, MAX_CANDIDATES = 2, 4


@dataclass(frozen=True)
class TaskSpec:
    per_task: int = 4
    replication: int = 3
    round: int | None = None
    batch: str | None = None
    priority: int = 0
    include_reference: bool = True
    seed: int = 0

    def __post_init__(self) -> None:
        if not MIN_CANDIDATES <= self.per_task <= MAX_CANDIDATES:
            raise InvalidInput(f"must be between {MIN_CANDIDATES} and {MAX_CANDIDATES}, got {self.per_task}",
                               field="per_task")
        if self.replication < 1:
            raise InvalidInput(f"must be at least 1, got {self.replication}", field="replication")


def reference_candidate(db: Session, doc: Document) -> Candidate | None:
    """The document's human reference summary as a candidate, created on first use."""
    if not doc.reference_summary:
        return None
    key = digest(doc.reference_summary)
    cand = db.scalar(select(Candidate).where(Candidate.document_id == doc.id, Candidate.text_hash == key))
    if cand is None:
        cand = Candidate(document_id=doc.id, text=doc.reference_summary.strip(), text_hash=key,
                         origin=CandidateOrigin.REFERENCE)
        db.add(cand)
        db.flush()
    return cand


def pick_diverse(cands: list[Candidate], k: int, rng: random.Random) -> list[Candidate]:
    """Up to k candidates, one per source (reference, each model version) before any repeats."""
    groups: dict[object, list[Candidate]] = defaultdict(list)
    for c in cands:
        groups[c.origin if c.model_version_id is None else c.model_version_id].append(c)
    for members in groups.values():
        rng.shuffle(members)
    # The reference first: a comparison against it is the most informative one we can make.
    order = sorted(groups, key=lambda g: (g != CandidateOrigin.REFERENCE, rng.random()))
    picked: list[Candidate] = []
    while len(picked) < k and any(groups[g] for g in order):
        for g in order:
            if groups[g] and len(picked) < k:
                picked.append(groups[g].pop())
    return picked


def create_tasks(db: Session, spec: TaskSpec, *, source: str | None = None, limit: int | None = None,
                 document_ids: Sequence[int] | None = None) -> list[ComparisonTask]:
    """One task per document (of `document_ids` when given) from candidates not yet in any task
    (and its reference)."""
    rng = random.Random(spec.seed)
    query = select(Document).where(Document.has_text.is_(True)).order_by(Document.id)
    if source is not None:
        query = query.where(Document.source == source)
    if document_ids is not None:
        query = query.where(Document.id.in_(list(document_ids)))
    used = set(db.scalars(select(TaskCandidate.candidate_id)))
    created: list[ComparisonTask] = []
    for doc in db.scalars(query):
        if limit is not None and len(created) >= limit:
            break
        pool = [c for c in doc.candidates if c.id not in used and c.origin != CandidateOrigin.REFERENCE]
        if not pool:
            continue
        ref = reference_candidate(db, doc) if spec.include_reference else None
        if ref is not None and ref.id not in {c.id for c in pool}:
            pool.append(ref)  # the reference may sit in many tasks: it anchors each round
        picked = pick_diverse(pool, spec.per_task, rng)
        if len(picked) < MIN_CANDIDATES:
            continue
        task = ComparisonTask(document_id=doc.id, replication_target=spec.replication, round=spec.round,
                              batch=spec.batch, priority=spec.priority,
                              slots=[TaskCandidate(candidate_id=c.id, slot=i) for i, c in enumerate(picked)])
        db.add(task)
        used.update(c.id for c in picked if c.origin != CandidateOrigin.REFERENCE)
        created.append(task)
    db.flush()
    refresh_statistics(db)
    return created


def untasked_documents(db: Session, *, source: str | None = None) -> list[int]:
    """Documents with text that are in no task yet, oldest first."""
    query = (select(Document.id).where(Document.has_text.is_(True),
                                       ~exists().where(ComparisonTask.document_id == Document.id))
             .order_by(Document.id))
    if source is not None:
        query = query.where(Document.source == source)
    return list(db.scalars(query))


def create_pair_tasks(db: Session, spec: TaskSpec, pairs: dict[int, tuple[int, int]]) -> list[ComparisonTask]:
    """One task per document showing exactly the given two of its candidates."""
    created = []
    for document_id, (a, b) in pairs.items():
        for cid in (a, b):
            cand = db.get(Candidate, cid)
            if cand is None or cand.document_id != document_id:
                raise InvalidInput(f"candidate {cid} is not a candidate of document {document_id}", field="pairs")
        task = ComparisonTask(document_id=document_id, replication_target=spec.replication, round=spec.round,
                              batch=spec.batch, priority=spec.priority,
                              slots=[TaskCandidate(candidate_id=a, slot=0), TaskCandidate(candidate_id=b, slot=1)])
        db.add(task)
        created.append(task)
    db.flush()
    refresh_statistics(db)
    return created


def create_round_tasks(db: Session, document_ids: list[int], round_: int, replication: int,
                       pairs: dict[int, tuple[int, int]] | None = None) -> int:
    """The comparison tasks a training round sends to annotators, tagged with the round: one per
    document, 2-4 of its new candidates with the reference, or, where `pairs` names them, the
    two candidates chosen (the comparisons the judge is least sure of); how many were created."""
    spec = TaskSpec(per_task=4, replication=replication, round=round_, batch=f"round-{round_}")
    if pairs:
        return len(create_pair_tasks(db, spec, pairs))
    return len(create_tasks(db, spec, document_ids=document_ids))
