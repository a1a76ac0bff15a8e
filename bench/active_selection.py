"""What choosing comparisons where the judge is least sure buys: judge accuracy against the number
of judgements collected, `uncertainty` against `random` selection, over three rounds.

Real TL;DR comparisons (`../shared/data/tldr/pairs_train.jsonl`) stand in for what annotators
would be shown; simulated raters of known accuracy (`--rater-accuracy`: the share of verdicts
that agree with the real human label) judge them. Posts are split into a test set and a pool.
Both strategies start from the same random seed batch; each round then takes `--per-round`
comparisons from a random sample of the pool (`--candidates` of them, as a round's fresh
documents would be), at random or closest to P = 0.5 under the current judge
(`training.rounds.selection.most_uncertain`, the function the loop's next batch uses), has them
judged, and retrains the reward model on everything collected. Accuracy is against the real
labels of the test posts.

    .venv/bin/python bench/active_selection.py [--rounds 3] [--seed-pairs 100] [--per-round 100] [--json]
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import random
import time
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch

from training.defaults import ENCODER
from training.judges.config import JudgeConfig
from training.judges.pairs import PreferencePair, read_pairs, split_by_document
from training.judges.trainer import evaluate_judge, judge_probabilities, train_judge
from training.rounds.selection import most_uncertain

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "tldr" / "pairs_train.jsonl"


def judged(pair: PreferencePair, accuracy: float, rng: random.Random) -> PreferencePair:
    """A simulated rater's verdict: the human label with probability `accuracy`, else reversed."""
    return pair if rng.random() < accuracy else replace(pair, chosen=pair.rejected, rejected=pair.chosen)


def run(strategy: str, pool: list[PreferencePair], test: list[PreferencePair], args: argparse.Namespace,
        cfg: JudgeConfig) -> list[dict[str, Any]]:
    rng = random.Random(args.seed)  # the same seed batch and rater coin flips for both strategies
    order = list(range(len(pool)))
    rng.shuffle(order)
    labelled = [judged(pool[i], args.rater_accuracy, rng) for i in order[:args.seed_pairs]]
    left = order[args.seed_pairs:]
    rows = []
    for number in range(args.rounds + 1):
        started = time.perf_counter()
        result = train_judge("reward", labelled, [], cfg, out=None, progress=False)
        metrics = evaluate_judge(result.judge, test)
        acc = metrics["accuracy"]
        rows.append({"strategy": strategy, "round": number, "judgements": len(labelled), "accuracy": acc,
                     "accuracy_se": math.sqrt(acc * (1 - acc) / len(test)),
                     "seconds": round(time.perf_counter() - started, 1)})
        print(json.dumps(rows[-1]), flush=True)
        if number == args.rounds:
            break
        offered = left[:args.candidates]  # this round's fresh comparisons
        if strategy == "uncertainty":
            p = judge_probabilities(result.judge, [pool[i] for i in offered])
            chosen = [offered[i] for i in most_uncertain(p, args.per_round)]
        else:
            chosen = offered[:args.per_round]
        labelled += [judged(pool[i], args.rater_accuracy, rng) for i in chosen]
        taken = set(chosen)
        left = [i for i in left if i not in taken]
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seed-pairs", type=int, default=100, help="judgements before the first round")
    ap.add_argument("--per-round", type=int, default=100, help="judgements collected per round")
    ap.add_argument("--candidates", type=int, default=400, help="comparisons offered to each round's selection")
    ap.add_argument("--test-pairs", type=int, default=600)
    ap.add_argument("--rater-accuracy", type=float, default=0.75)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    models_dir = Path(os.environ.get("CALIBRA_MODELS_DIR", ROOT / ".calibra" / "models"))
    cfg = JudgeConfig(backbone=str(ENCODER.path(models_dir)), epochs=args.epochs)
    pool, test = split_by_document(read_pairs(args.data), 0.2, seed=args.seed)
    test = test[:args.test_pairs]
    rows = [row for strategy in ("random", "uncertainty") for row in run(strategy, pool, test, args, cfg)]
    result = {"date": datetime.now(UTC).isoformat(timespec="minutes"), "cpus": os.cpu_count(),
              "machine": platform.machine(), "torch_threads": torch.get_num_threads(), "test_pairs": len(test),
              "rater_accuracy": args.rater_accuracy, "candidates": args.candidates, "rows": rows}
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(f"{'strategy':<12} {'round':>5} {'judgements':>10} {'accuracy':>9} {'± se':>6}")
    for r in rows:
        print(f"{r['strategy']:<12} {r['round']:>5} {r['judgements']:>10} {r['accuracy']:>9.3f} "
              f"{r['accuracy_se']:>6.3f}")


if __name__ == "__main__":
    main()
