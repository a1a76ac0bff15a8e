"""One complete SLiC-HF sample-rank round on real TL;DR posts, with the default policy.

64 posts of `../shared/data/tldr/posts_test400.jsonl` are sampled (m = 8, temperature 0.7,
top-k 40) and ranked by a ranking model (tournament) or a reward model (score and sort), trained
by `bench/reward_tldr.py --model ranker|reward --out DIR`; a LoRA adapter is trained with the
SLiC-HF loss; then the new and the base policy each summarise 100 other posts of the file and
every judge given compares them. Reports win rates, the length change and the wall time of every
stage.

    .venv/bin/python bench/slic_tldr.py --ranker .calibra/bench/ranker-tldr [--reward DIR] [--rank-with reward] [--json]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import time
from dataclasses import fields
from datetime import UTC, datetime
from pathlib import Path

import torch

from training.defaults import POLICY
from training.generation import SamplingConfig
from training.slic.config import SlicConfig
from training.slic.data import RoundDocument
from training.slic.round import (
    SLIC_SAMPLING,
    Policy,
    RoundFiles,
    load_round,
    run_evaluation,
    run_sample_rank,
    run_train,
)

ROOT = Path(__file__).resolve().parents[1]
POSTS = ROOT.parent / "shared" / "data" / "tldr" / "posts_test400.jsonl"


def read_posts(path: Path) -> list[RoundDocument]:
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [RoundDocument(str(r["instruction_id"]), r["instruction"], r.get("title"), r.get("subreddit"),
                          r.get("gold_response")) for r in rows]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ranker", help="a ranking model folder (bench/reward_tldr.py --model ranker --out)")
    ap.add_argument("--reward", help="a reward model folder (bench/reward_tldr.py --model reward --out)")
    ap.add_argument("--rank-with", choices=("ranker", "reward"),
                    help="the judge that ranks the sampled candidates (default: the ranker when given)")
    ap.add_argument("--posts", type=Path, default=POSTS, help="posts with human TL;DRs, one JSON object per line")
    ap.add_argument("--train-posts", type=int, default=64)
    ap.add_argument("--eval-posts", type=int, default=100)
    ap.add_argument("--per-doc", type=int, default=SLIC_SAMPLING.per_doc)
    ap.add_argument("--folder", type=Path, default=ROOT / ".calibra" / "bench" / "slic-round")
    ap.add_argument("--eval-only", action="store_true",
                    help="evaluate the round the folder holds again (its samples are seeded: the same ones)")
    ap.add_argument("--json", action="store_true")
    for f in fields(SlicConfig):
        kind = {int: int, float: float, bool: lambda s: s.lower() in ("1", "true", "yes")}.get(type(f.default), str)
        ap.add_argument(f"--{f.name.replace('_', '-')}", type=kind, default=None)
    args = ap.parse_args()
    judges = {kind: (kind, path) for kind, path in (("ranker", args.ranker), ("reward", args.reward)) if path}
    rank_with = args.rank_with or next(iter(judges), None)
    if rank_with not in judges:
        ap.error("give the judge that ranks: --ranker DIR, or --reward DIR with --rank-with reward")
    cfg = SlicConfig(**{f.name: getattr(args, f.name) for f in fields(SlicConfig) if getattr(args, f.name) is not None})
    models_dir = Path(os.environ.get("CALIBRA_MODELS_DIR", ROOT / ".calibra" / "models"))
    base = Policy(str(POLICY.path(models_dir)))
    posts = read_posts(args.posts)
    train_docs, eval_docs = posts[:args.train_posts], posts[args.train_posts:args.train_posts + args.eval_posts]
    files = RoundFiles(args.folder)
    # the policy is trained on the prompts it sampled from: the same cut of the post
    sampling = SamplingConfig(**{**SLIC_SAMPLING.__dict__, "per_doc": args.per_doc, "seed": cfg.seed,
                                 "max_post_tokens": cfg.max_prompt_tokens})
    progress = not args.json
    times = {}
    if args.eval_only:
        records, trained = load_round(files), json.loads((files.adapter / "slic.json").read_text())["metrics"]
    else:
        t = time.perf_counter()
        records = run_sample_rank(base, train_docs, *judges[rank_with], files, sampling=sampling, progress=progress)
        times["sample_rank_s"] = time.perf_counter() - t
        t = time.perf_counter()
        trained = run_train(base, records, cfg, files, progress=progress).metrics
        times["train_s"] = time.perf_counter() - t
    t = time.perf_counter()
    evaluation = run_evaluation(Policy(base.base, str(files.adapter)), base, eval_docs, judges, files,
                                sampling=SamplingConfig(**{**sampling.__dict__, "seed": 1234}), cfg=cfg,
                                progress=progress)
    times["eval_s"] = time.perf_counter() - t
    cand = sum(len(r.candidates) for r in records)
    out = {
        "ranked_with": rank_with, "train_posts": len(records), "candidates": cand, "pairs": trained["pairs"],
        "judged_by": evaluation["judged_by"], "length": evaluation["length"],
        "length_change": evaluation["length_change"], "repeats_layout": evaluation["repeats_layout"],
        "reference_logprob": evaluation["reference_logprob"],
        "slic_pair_accuracy_last_quarter": trained["pair_accuracy_last_quarter"],
        **{k: round(v, 1) for k, v in times.items()}, "total_minutes": round(sum(times.values()) / 60, 1),
        "config": cfg.as_dict(), "sampling": sampling.__dict__,
        "date": datetime.now(UTC).isoformat(timespec="seconds"), "cpus": os.cpu_count(),
        "python": platform.python_version(), "torch": torch.__version__,
    }
    print(json.dumps(out, indent=2, default=str))


if __name__ == "__main__":
    main()
