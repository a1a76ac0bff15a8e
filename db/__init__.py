"""Tables, engine and migrations. Imports nothing else from Calibra."""
from db.engine import Transactions, make_engine, session_factory, transaction
from db.migrate import upgrade
from db.models import (
    Assignment,
    AssignmentStatus,
    Base,
    Candidate,
    CandidateOrigin,
    CandidateRating,
    CandidateScore,
    ComparisonTask,
    Document,
    Judgement,
    ModelKind,
    ModelStatus,
    ModelVersion,
    Rater,
    Role,
    RunStatus,
    Strength,
    TaskCandidate,
    TrainingRun,
)

__all__ = [
    "Assignment", "AssignmentStatus", "Base", "Candidate", "CandidateOrigin", "CandidateRating", "CandidateScore",
    "ComparisonTask", "Document", "Judgement", "ModelKind", "ModelStatus", "ModelVersion",
    "Rater", "Role", "RunStatus", "Strength", "TaskCandidate", "TrainingRun",
    "Transactions", "make_engine", "session_factory", "transaction", "upgrade",
]
