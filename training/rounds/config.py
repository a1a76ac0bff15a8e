"""What a round is asked to do (`RoundOptions`, per request) and the loop's deployment settings
(`LoopSettings`, from `calibra.toml`, passed down by the app)."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from training.errors import UsageError
from training.rounds.selection import SELECTIONS

JUDGES = ("reward", "ranker")
MODES = ("sample-rank", "direct")


@dataclass(frozen=True)
class LoopSettings:
    home: Path  # rounds live under <home>/rounds/loop-R
    models_dir: Path
    min_judgements: int = 30  # round_min_judgements: fewer new judgements skip the round
    ranker: bool = False  # round_ranker: also retrain the ranking model
    batch_docs: int = 30  # round_batch_docs: fresh documents sent to annotators after a round
    replication: int = 3
    promote_min_win_rate: float = 0.55
    promote_max_length_growth: float = 0.2
    next_batch_selection: str = "random"  # or uncertainty: the comparisons the judge is least sure of
    hacking_alarm_gap: float = 0.1  # judge's predicted win rate above the annotators' that raises the alarm


@dataclass(frozen=True)
class RoundOptions:
    """A round request's options, stored on the round as JSON (so a resumed round runs as asked)."""

    docs: int | None = None  # documents for sample-rank (default: those of the new judgements)
    judge: str = "reward"  # the judge that ranks the round's samples
    mode: str = "sample-rank"  # or direct: the human pairs, when no judge is trusted
    pool: bool = False  # train the judges on every round's judgements, not the newest batch alone
    include_simulated: bool = False  # simulated raters' judgements count (dry runs of the loop)
    eval_docs: int = 30  # held-out documents for the evaluation
    per_doc: int = 8  # sample-rank's m
    batch_docs: int | None = None  # default: the round_batch_docs setting
    next_batch_selection: str | None = None  # random | uncertainty; default: the setting
    sft_docs: int | None = None  # round 0: documents with a human reference to fine-tune on
    sft_preferred: bool = False  # round 0: also the human-preferred summary of each pair
    judge_settings: dict[str, Any] = field(default_factory=dict)  # JudgeConfig fields (backbone, epochs, ...)
    slic_settings: dict[str, Any] = field(default_factory=dict)  # SlicConfig fields (epochs, lora_r, ...)

    def __post_init__(self) -> None:
        if self.judge not in JUDGES:
            raise UsageError(f"judge must be reward or ranker, not {self.judge!r}")
        if self.mode not in MODES:
            raise UsageError(f"mode must be sample-rank or direct, not {self.mode!r}")
        if self.next_batch_selection not in (None, *SELECTIONS):
            raise UsageError(f"next_batch_selection must be random or uncertainty, not {self.next_batch_selection!r}")
        for name in ("docs", "batch_docs", "sft_docs"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise UsageError(f"{name} must be at least 1")
        if self.eval_docs < 1 or self.per_doc < 2:
            raise UsageError("eval_docs must be at least 1 and per_doc at least 2")

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RoundOptions:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})
