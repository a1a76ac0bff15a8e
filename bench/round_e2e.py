"""The weekly loop end to end on the default models: round 0 (the supervised start), then rounds
whose judges and policy train on simulated raters' judgements of the previous round's outputs.

A fresh database under `--home` imports the real TL;DR posts of `../shared/data/tldr/posts_test400.jsonl`
(with their human references); the default policy is the base. Each round is requested and run
by the round worker exactly as `calibra worker` runs it; between rounds `--raters` simulated
raters answer the tasks the round sent to annotators. Reports the wall time of every stage and
round, and each round's metrics: restatement rate, length, ROUGE-L against the references beside
copying the lead, win rates, the judges' accuracy and the gate's decision.

    .venv/bin/python bench/round_e2e.py [--rounds 2] [--docs 30] [--raters 3] [--json]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
POSTS = ROOT.parent / "shared" / "data" / "tldr" / "posts_test400.jsonl"


def _seconds(stage: dict[str, Any]) -> float | None:
    if not stage["started_at"] or not stage["finished_at"]:
        return None
    start, end = (datetime.fromisoformat(stage[k]) for k in ("started_at", "finished_at"))
    return (end - start).total_seconds()


def _evaluation(payload: dict[str, Any]) -> dict[str, Any]:
    """The figures every round's evaluation reports, for the table."""
    stage = next((s for s in payload["stages"] if s["name"] == "evaluate"), None)
    if stage is None or not stage["metrics"]:
        return {}
    summary = stage["metrics"]["summary"]
    keep = ("documents", "rouge_l", "repeats_layout", "mean_words", "length_change", "reference_logprob")
    return {k: v for k, v in summary.items() if k in keep or k.endswith("_win_rate")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--posts", type=Path, default=POSTS)
    ap.add_argument("--home", type=Path, default=ROOT / ".calibra" / "bench" / "round-e2e",
                    help="a fresh data folder (emptied first)")
    ap.add_argument("--models-dir", type=Path, default=ROOT / ".calibra" / "models",
                    help="where `calibra models fetch` put the default models")
    ap.add_argument("--rounds", type=int, default=2, help="rounds after round 0")
    ap.add_argument("--docs", type=int, default=30, help="documents per batch sent to annotators (round_batch_docs)")
    ap.add_argument("--eval-docs", type=int, default=30)
    ap.add_argument("--sft-docs", type=int, default=None, help="round 0's documents (default: all but the held-out)")
    ap.add_argument("--raters", type=int, default=3)
    ap.add_argument("--rater-noise", type=float, default=0.2, help="share of the simulated raters' picks at random")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    shutil.rmtree(args.home, ignore_errors=True)
    args.home.mkdir(parents=True)
    os.environ.update(CALIBRA_HOME=str(args.home), CALIBRA_MODELS_DIR=str(args.models_dir),
                      CALIBRA_ROUND_BATCH_DOCS=str(args.docs))
    # imported after the environment is set: the settings are read from it
    from annotate.importing import import_files
    from annotate.simulate import SimulationSpec, length_scorer, simulate
    from annotate.tasks import create_round_tasks
    from app.context import open_context
    from training.rounds.config import RoundOptions
    from training.rounds.store import find_round, request_round, round_payload
    from training.worker import Worker

    ctx = open_context()
    import_files(ctx.transaction, [args.posts], source="tldr-test")
    worker = Worker(ctx.transaction, ctx.engine, ctx.loop_settings(), create_round_tasks)
    options = RoundOptions(eval_docs=args.eval_docs, sft_docs=args.sft_docs, include_simulated=True)
    rounds: list[dict[str, Any]] = []
    for number in range(args.rounds + 1):
        simulated = 0.0
        if number > 0:
            started = time.perf_counter()
            answered = simulate(ctx.transaction, SimulationSpec(raters=args.raters, round=number,
                                                                noise=args.rater_noise, seed=number), length_scorer)
            simulated = time.perf_counter() - started
            print(f"round {number}: {sum(answered.values())} simulated judgements in {simulated:.1f} s", flush=True)
        with ctx.transaction() as db:
            request_round(db, options, "bench")
        started = time.perf_counter()
        status = worker.run_once()
        wall = time.perf_counter() - started
        with ctx.transaction() as db:
            payload = round_payload(find_round(db, number))
        stages = {s["name"]: _seconds(s) for s in payload["stages"]}
        row = {"round": number, "status": payload["status"], "reason": payload["reason"],
               "wall_minutes": round(wall / 60, 2), "simulated_raters_seconds": round(simulated, 1),
               "stage_minutes": {k: None if v is None else round(v / 60, 2) for k, v in stages.items()},
               "decision": payload["decision"], "evaluation": _evaluation(payload),
               "judges": next((s["metrics"] for s in payload["stages"] if s["name"] == "judges"), None),
               "snapshot": payload["snapshot"]}
        rounds.append(row)
        print(f"round {number}: {status.value if status else 'nothing claimed'} in {wall / 60:.1f} min; "
              f"stages {row['stage_minutes']}", flush=True)
        print(json.dumps(row["evaluation"]), flush=True)
        if payload["status"] != "succeeded":
            break
    result = {"date": datetime.now(UTC).isoformat(timespec="minutes"),
              "machine": platform.processor() or platform.machine(),
              "cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(), "posts": str(args.posts),
              "docs": args.docs, "eval_docs": args.eval_docs, "raters": args.raters,
              "rater_noise": args.rater_noise, "rounds": rounds}
    (args.home / "result.json").write_text(json.dumps(result, indent=2))
    if args.json:
        print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
