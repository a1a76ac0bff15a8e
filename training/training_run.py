"""What every trainer (reward model, ranking model, SLiC-HF) does around the training loop.

A run is keyed by what it trains (settings, starting point, data), not by the name it will be
registered under, so the same call after an interruption finds its checkpoints beside the
artifact and resumes. The artifact is written whole with its manifest, or not at all, and the
checkpoints go once it is in place. The curves (`report_to`) go to `tensorboard/NAME` beside the
artifact, so that one `tensorboard --logdir` over the folder compares every run saved there.
"""
from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import torch

from training.artifacts import atomic_dir
from training.loop import FitResult, LoopConfig, StepOutput, fit, is_main_process

B = TypeVar("B")


@dataclass(frozen=True)
class TrainingRun:
    kind: str  # reward, ranker, slic: part of the checkpoint folder's name
    out: Path | None  # the artifact's folder; None trains without saving
    key: str

    @classmethod
    def keyed(cls, kind: str, out: Path | None, *parts: Any) -> TrainingRun:
        return cls(kind, out, hashlib.sha1(json.dumps(list(parts)).encode()).hexdigest()[:12])

    @property
    def checkpoints(self) -> Path | None:
        return None if self.out is None else self.out.parent / f".checkpoint-{self.kind}-{self.key}"

    @property
    def logs(self) -> Path | None:
        """Beside the artifact rather than in it: the artifact is replaced whole when saved, and
        the curves are there to be watched while it trains."""
        return None if self.out is None else self.out.parent / "tensorboard" / self.out.name

    def fit(self, model: torch.nn.Module, epoch_batches: Callable[[int], Sequence[B]],
            step: Callable[[torch.nn.Module, B], StepOutput], cfg: LoopConfig, **options: Any) -> FitResult:
        """The shared loop (`training.loop.fit`), checkpointing into this run's folder and
        logging beside it."""
        if self.checkpoints is not None:
            self.checkpoints.mkdir(parents=True, exist_ok=True)
        return fit(model, epoch_batches, step, cfg, checkpoint_dir=self.checkpoints, log_dir=self.logs, **options)

    @staticmethod
    def saves(result: FitResult) -> bool:
        """Whether this process saves what was trained: not after an interruption (the checkpoint
        holds it), and in one process only when several trained the same weights."""
        return not result.interrupted and is_main_process()

    def save(self, write: Callable[[Path], None], manifest_name: str, manifest: dict[str, Any]) -> Path | None:
        """`write` fills a temporary folder, the manifest goes beside it, and the folder replaces
        `out` in one rename; the checkpoints are removed after."""
        if self.out is None:
            return None
        with atomic_dir(self.out) as tmp:
            write(tmp)
            (tmp / manifest_name).write_text(json.dumps(manifest, indent=2, default=str))
        if self.checkpoints is not None:
            shutil.rmtree(self.checkpoints, ignore_errors=True)
        return self.out


def logs_entry(metrics: dict[str, Any]) -> dict[str, Any]:
    """Where a run's curves are, for a command's summary: nothing when it logged none."""
    return {"logs": metrics["logs"]} if "logs" in metrics else {}


def logs_note(logs: str | None) -> str:
    """How a command's last line points at a run's curves: nothing when it logged none."""
    return f"; logs: tensorboard --logdir {logs}" if logs else ""
