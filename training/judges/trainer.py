"""Train, evaluate, save and load the two judges: `reward` (pointwise) and `ranker` (pairwise).

A saved judge is a folder: the model and tokenizer as `save_pretrained` writes them, and
`judge.json` with its kind, settings, metrics and the data it learned from. It is written to a
temporary folder and renamed into place when complete; training checkpoints live beside it
(keyed by the settings and data) until the run finishes, so an interrupted run resumes.
"""
from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from training.artifacts import fingerprint
from training.judges.config import JudgeConfig
from training.judges.metrics import pair_metrics
from training.judges.pairs import PreferencePair
from training.judges.ranker_model import PairwiseRanker
from training.judges.reward_model import RewardScorer
from training.judges.scalar_model import MANIFEST, ScalarJudge, head_names, unwrap_for_saving
from training.training_run import TrainingRun

JUDGES: dict[str, type[ScalarJudge]] = {"reward": RewardScorer, "ranker": PairwiseRanker}
KINDS = tuple(JUDGES)
EVAL_CHUNK = 256  # pairs between two updates of the evaluation's progress bar


@dataclass
class JudgeResult:
    judge: ScalarJudge
    metrics: dict[str, Any]
    path: Path | None


def data_fingerprint(pairs: Sequence[PreferencePair]) -> str:
    return fingerprint([(p.prompt, p.chosen, p.rejected, str(p.margin), str(p.weight)) for p in pairs])


def load_judge(kind: str, spec: str | Path, cfg: JudgeConfig | None = None, *, device: str = "auto",
               warm_start: bool = False) -> ScalarJudge:
    """A saved judge (its own settings apply) or a fresh head on a backbone. A warm start takes
    a saved judge of either kind (both are a backbone with a scalar head) and sets it up with
    `cfg`, the settings of the training to come."""
    if kind not in JUDGES:
        raise ValueError(f"kind must be one of {', '.join(KINDS)}")
    manifest = Path(spec) / MANIFEST
    if manifest.is_file() and not warm_start:
        saved = json.loads(manifest.read_text())
        if saved["kind"] != kind:
            raise ValueError(f"{spec} is a {saved['kind']} model, not a {kind} model")
        cfg = JudgeConfig(**{**saved["config"], "lora_r": 0})  # LoRA weights were merged on saving
    return JUDGES[kind].load(spec, cfg, device=device)


def judge_probabilities(judge: ScalarJudge, pairs: Sequence[PreferencePair], *,
                        progress: bool = False) -> list[float]:
    """P(chosen ≻ rejected) per pair."""
    probs: list[float] = []
    with tqdm(total=len(pairs), desc="evaluating", unit="pair", disable=not progress) as bar:
        for start in range(0, len(pairs), EVAL_CHUNK):
            chunk = pairs[start:start + EVAL_CHUNK]
            probs += judge.prefer([(p.prompt, p.chosen, p.rejected) for p in chunk])
            bar.update(len(chunk))
    return probs


def evaluate_judge(judge: ScalarJudge, pairs: Sequence[PreferencePair], *, progress: bool = False) -> dict[str, Any]:
    return pair_metrics(pairs, judge_probabilities(judge, pairs, progress=progress))


def train_judge(kind: str, train: Sequence[PreferencePair], test: Sequence[PreferencePair], cfg: JudgeConfig, *,
                out: Path | None, init: str | Path | None = None, progress: bool = True,
                stop_after: int | None = None, extra: dict[str, Any] | None = None,
                on_step: Callable[[int, int, float], bool] | None = None) -> JudgeResult:
    """Train a judge on `train`, measure it on `test`, and save it to `out` (when given).

    `init` warm-starts from a saved judge instead of the backbone: the previous version, or the
    reward model for a ranker. With `stop_after` the run stops after that many optimizer steps,
    keeping its checkpoint, as an interruption would; calling again with the same arguments
    resumes it.
    """
    if not train:
        raise ValueError("no training pairs")
    torch.manual_seed(cfg.seed)  # a fresh head starts the same way every time, so a resumed run matches
    judge = load_judge(kind, init or cfg.backbone, cfg, warm_start=True)
    data_hash = data_fingerprint(train)
    run = TrainingRun.keyed(kind, out, cfg.as_dict(), str(init), data_hash)
    head = head_names(judge.model)

    def lr_of(name: str) -> float:
        return cfg.head_learning_rate if name in head and cfg.head_learning_rate > 0 else cfg.learning_rate

    def held_out() -> dict[str, Any]:
        return evaluate_judge(judge, test, progress=progress)

    result = run.fit(judge.model, lambda epoch: judge.training_batches(train, cfg.batch_texts, cfg.seed + epoch),
                     lambda model, b: judge.batch_loss(b, cfg, model), cfg, desc=f"train {kind}", progress=progress,
                     stop_after=stop_after, lr_of=lr_of, on_step=on_step, evaluate=held_out if test else None)
    metrics: dict[str, Any] = {"train_pairs": len(train), "train_seconds": result.seconds,
                               "optimizer_steps": result.steps, "final_loss": result.last_loss,
                               "loss_history": result.history}
    if result.logs is not None:
        metrics["logs"] = str(result.logs)
    if result.interrupted:
        metrics["interrupted"] = True
    if not run.saves(result):  # the checkpoint holds an interrupted run; one of several processes saves
        return JudgeResult(judge, metrics, None)
    if result.evaluation is not None:
        metrics["test"] = result.evaluation
    snapshot = {"pairs": len(train), "hash": data_hash, **(extra or {})}
    if out is not None:
        judge.model = unwrap_for_saving(judge.model)

    def write(folder: Path) -> None:
        judge.model.save_pretrained(folder)
        judge.tokenizer.save_pretrained(folder)

    path = run.save(write, MANIFEST, {"kind": kind, "config": cfg.as_dict(), "metrics": metrics,
                                      "data_snapshot": snapshot, "init": str(init) if init else None})
    metrics["data_snapshot"] = snapshot
    return JudgeResult(judge, metrics, path)
