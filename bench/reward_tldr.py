"""Held-out pairwise accuracy of the reward model and the ranking model on real TL;DR preferences.

Trains on `../shared/data/tldr/pairs_train.jsonl` (7,260 human comparisons over 1,203 posts),
split by post, and reports accuracy on the held-out posts beside the length baseline and the
accuracy on pairs of similar length, with training time and pairs per second.

    .venv/bin/python bench/reward_tldr.py --model reward [--backbone PATH] [--limit N] [--json]
    .venv/bin/python bench/reward_tldr.py --model ranker [--init REWARD_DIR] --out .calibra/bench/ranker-tldr
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import time
from dataclasses import fields
from datetime import UTC, datetime
from pathlib import Path

import torch

from training.defaults import ENCODER
from training.judges.config import JudgeConfig
from training.judges.pairs import read_pairs, split_by_document
from training.judges.trainer import train_judge

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "tldr" / "pairs_train.jsonl"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", choices=("reward", "ranker"), default="reward")
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--limit", type=int, help="use only the first N pairs")
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--out", type=Path, help="save the trained model here (bench/slic_tldr.py uses the ranker)")
    ap.add_argument("--init", type=Path, help="warm start from a saved judge (a reward model for the ranker)")
    ap.add_argument("--json", action="store_true")
    for f in fields(JudgeConfig):  # every training setting can be varied from the command line
        kind = {int: int, float: float, bool: lambda s: s.lower() in ("1", "true", "yes")}.get(type(f.default), str)
        ap.add_argument(f"--{f.name.replace('_', '-')}", type=kind, default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    overrides = {f.name: getattr(args, f.name) for f in fields(JudgeConfig) if getattr(args, f.name) is not None}
    models_dir = Path(os.environ.get("CALIBRA_MODELS_DIR", ROOT / ".calibra" / "models"))
    overrides.setdefault("backbone", str(ENCODER.path(models_dir)))
    cfg = JudgeConfig(**overrides)
    pairs = read_pairs(args.data, args.limit)
    train, test = split_by_document(pairs, cfg.test_fraction, seed=cfg.seed)
    started = time.perf_counter()
    result = train_judge(args.model, train, test, cfg, out=args.out, init=args.init, progress=not args.json)
    wall = time.perf_counter() - started
    m = result.metrics["test"]
    out = {"model": args.model, "train_pairs": len(train), "test_pairs": len(test),
           "accuracy": m["accuracy"], "accuracy_se": math.sqrt(m["accuracy"] * (1 - m["accuracy"]) / len(test)),
           "length_baseline_accuracy": m["length_baseline_accuracy"],
           "similar_length_pairs": m["similar_length_pairs"], "similar_length_accuracy": m["similar_length_accuracy"],
           "longer_preferred_by_model": m["longer_preferred_by_model"],
           "train_seconds": round(result.metrics["train_seconds"], 1),
           "train_pairs_per_second": round(len(train) * cfg.epochs / result.metrics["train_seconds"], 2),
           "projected_minutes_all_7260": round(
               7260 * cfg.epochs / (len(train) * cfg.epochs / result.metrics["train_seconds"]) / 60, 1),
           "wall_seconds": round(wall, 1), "calibration": m["calibration"], "config": cfg.as_dict(),
           "date": datetime.now(UTC).isoformat(timespec="seconds"), "cpus": os.cpu_count(), "threads": args.threads,
           "python": platform.python_version(), "torch": torch.__version__}
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
