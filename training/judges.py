"""Train, evaluate, save and load the two judges: `reward` (pointwise) and `ranker` (pairwise).

A saved judge is a folder: the model and tokenizer as `save_pretrained` writes them, and
`judge.json` with its kind, settings, metrics and the data it learned from. It is written to a
temporary folder and renamed into place when complete; training checkpoints live beside it
(keyed by the settings and data) until the run finishes, so an interrupted run resumes.
"""
from __future__ import annotations

import hashlib
import json
import math
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from training.artifacts import atomic_dir, fingerprint
from training.judge_metrics import pair_metrics
from training.judge_config import MANIFEST, JudgeConfig, head_names, unwrap_for_saving
from training.loop import fit, is_main_process
from training.preference_data import PreferencePair
from training.ranker_model import PairwiseRanker, ordered_batches
from training.reward_model import RewardScorer, group_batches

KINDS = ("reward", "ranker")


@dataclass
class JudgeResult:
    judge: RewardScorer | PairwiseRanker
    metrics: dict[str, Any]
    path: Path | None


def data_fingerprint(pairs: Sequence[PreferencePair]) -> str:
    return fingerprint([(p.prompt, p.chosen, p.rejected, str(p.margin), str(p.weight)) for p in pairs])


def load_judge(kind: str, spec: str | Path, cfg: JudgeConfig | None = None, *, device: str = "auto",
               warm_start: bool = False) -> RewardScorer | PairwiseRanker:
    """A saved judge (its own settings apply) or a fresh head on a backbone. A warm start takes
    a saved judge of either kind (both are a backbone with a scalar head) and sets it up with
    `cfg`, the settings of the training to come."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {', '.join(KINDS)}")
    manifest = Path(spec) / MANIFEST
    if manifest.is_file() and not warm_start:
        saved = json.loads(manifest.read_text())
        if saved["kind"] != kind:
            raise ValueError(f"{spec} is a {saved['kind']} model, not a {kind} model")
        cfg = JudgeConfig(**{**saved["config"], "lora_r": 0})  # LoRA weights were merged on saving
    cls = RewardScorer if kind == "reward" else PairwiseRanker
    return cls.load(spec, cfg, device=device)


def judge_probabilities(judge: RewardScorer | PairwiseRanker, pairs: Sequence[PreferencePair]) -> list[float]:
    """P(chosen ≻ rejected) per pair: σ(r+ - r-) for the reward model, the ranker's symmetric
    estimate for the ranking model."""
    if isinstance(judge, RewardScorer):
        return [1 / (1 + math.exp(rejected - chosen)) for chosen, rejected in judge.pair_scores(pairs)]
    return judge.prefer([(p.prompt, p.chosen, p.rejected) for p in pairs])


def evaluate_judge(judge: RewardScorer | PairwiseRanker, pairs: Sequence[PreferencePair]) -> dict[str, Any]:
    return pair_metrics(pairs, judge_probabilities(judge, pairs))


def train_judge(kind: str, train: Sequence[PreferencePair], test: Sequence[PreferencePair], cfg: JudgeConfig, *,
                out: Path | None, init: str | Path | None = None, progress: bool = True,
                stop_after: int | None = None, extra: dict[str, Any] | None = None) -> JudgeResult:
    """Train a judge on `train`, measure it on `test`, and save it to `out` (when given).

    `init` warm-starts from a saved judge instead of the backbone: the previous version, or the
    reward model for a ranker. With
    `stop_after` the run stops after that many optimizer steps, keeping its checkpoint, as an
    interruption would; calling again with the same arguments resumes it.
    """
    if not train:
        raise ValueError("no training pairs")
    torch.manual_seed(cfg.seed)  # a fresh head starts the same way every time, so a resumed run matches
    judge = load_judge(kind, init or cfg.backbone, cfg, warm_start=True)
    data_hash = data_fingerprint(train)
    run_key = hashlib.sha1(json.dumps([cfg.as_dict(), str(init), data_hash]).encode()).hexdigest()[:12]
    # keyed by what is trained, not by the name: the same command run again resumes
    checkpoints = None if out is None else out.parent / f".checkpoint-{kind}-{run_key}"
    if isinstance(judge, RewardScorer):
        def batches(epoch: int) -> list[Any]:
            return group_batches(train, cfg.batch_texts, cfg.seed + epoch)
    else:
        def batches(epoch: int) -> list[Any]:
            return ordered_batches(train, cfg.batch_texts, cfg.seed + epoch)
    if checkpoints is not None:
        checkpoints.mkdir(parents=True, exist_ok=True)
    head = head_names(judge.model)

    def lr_of(name: str) -> float:
        return cfg.head_learning_rate if name in head and cfg.head_learning_rate > 0 else cfg.learning_rate

    result = fit(judge.model, batches, lambda model, b: judge.batch_loss(b, cfg, model), cfg, checkpoint_dir=checkpoints,
                 desc=f"train {kind}", progress=progress, stop_after=stop_after, lr_of=lr_of)
    metrics: dict[str, Any] = {"train_pairs": len(train), "train_seconds": result.seconds,
                               "optimizer_steps": result.steps, "final_loss": result.last_loss,
                               "loss_history": result.history}
    if result.interrupted:
        metrics["interrupted"] = True
        return JudgeResult(judge, metrics, None)
    if not is_main_process():  # several processes hold the same weights: one evaluates and saves them
        return JudgeResult(judge, metrics, None)
    if test:
        metrics["test"] = evaluate_judge(judge, test)
    snapshot = {"pairs": len(train), "hash": data_hash, **(extra or {})}
    if out is not None:
        judge.model = unwrap_for_saving(judge.model)
        with atomic_dir(out) as tmp:
            judge.model.save_pretrained(tmp)
            judge.tokenizer.save_pretrained(tmp)
            (tmp / MANIFEST).write_text(json.dumps({"kind": kind, "config": cfg.as_dict(), "metrics": metrics,
                                                    "data_snapshot": snapshot, "init": str(init) if init else None},
                                                   indent=2, default=str))
        shutil.rmtree(checkpoints, ignore_errors=True)
    metrics["data_snapshot"] = snapshot
    return JudgeResult(judge, metrics, out)
