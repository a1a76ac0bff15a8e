"""Tables, engine and migrations. Imports nothing else from Calibra."""
from db.engine import Transactions, make_engine, read_transaction, session_factory, transaction
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
    LoopSetting,
    ModelKind,
    ModelStatus,
    ModelVersion,
    Rater,
    RegistryEvent,
    Role,
    RoundStage,
    RoundStatus,
    StageStatus,
    Strength,
    TaskCandidate,
    TrainingRound,
)

__all__ = [
    "Assignment", "AssignmentStatus", "Base", "Candidate", "CandidateOrigin", "CandidateRating", "CandidateScore",
    "ComparisonTask", "Document", "Judgement", "LoopSetting", "ModelKind", "ModelStatus", "ModelVersion",
    "Rater", "RegistryEvent", "Role", "RoundStage", "RoundStatus", "StageStatus", "Strength", "TaskCandidate",
    "TrainingRound",
    "Transactions", "make_engine", "read_transaction", "session_factory", "transaction", "upgrade",
]
