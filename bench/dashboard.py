"""Time to compute the whole agreement report (the admin dashboard) for 100k judgements.

A synthetic database is generated first (not timed): tasks of 3 summaries from three model
versions, each judged by 3 of 60 raters who pick the best and rate every summary, with some
raters biased towards the first position. Then `load_frames` + `build_report` (bootstrap
included) are timed. Target: under 5 s on this machine.

    .venv/bin/python bench/dashboard.py [--judgements 100000] [--bootstrap 200] [--json]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import random
import tempfile
import time
from datetime import UTC, datetime, timedelta

from sqlalchemy import insert

from annotate.judgement_frames import load_frames
from annotate.report import build_report
from db import make_engine, session_factory, transaction, upgrade
from db.models import (
    Assignment,
    Candidate,
    CandidateRating,
    ComparisonTask,
    Document,
    Judgement,
    ModelVersion,
    Rater,
    TaskCandidate,
    digest,
)

VERSIONS = ["policy-r0", "policy-r1", "policy-r2"]


def generate(url: str, judgements: int, raters: int, seed: int = 0) -> None:
    rng = random.Random(seed)
    engine = make_engine(url)
    upgrade(engine)
    tasks = judgements // 3
    start = datetime(2026, 11, 1)
    with engine.begin() as conn:
        conn.execute(insert(ModelVersion), [{"id": i + 1, "kind": "policy", "name": n, "base_model": "x",
                                             "status": "registered", "created_at": start}
                                            for i, n in enumerate(VERSIONS)])
        conn.execute(insert(Rater), [{"id": r + 1, "name": f"rater{r:03d}", "role": "annotator", "active": True,
                                      "created_at": start} for r in range(raters)])
        conn.execute(insert(Document), [{"id": t + 1, "source": "synthetic", "text": f"post {t}",
                                         "content_hash": digest(f"post {t}"), "has_text": True, "created_at": start}
                                        for t in range(tasks)])
        conn.execute(insert(Candidate), [{"id": 3 * t + v + 1, "document_id": t + 1, "origin": "model",
                                          "model_version_id": v + 1, "text": " ".join(["word"] * (10 + 8 * v + t % 7)),
                                          "text_hash": digest(f"{t}-{v}"), "created_at": start}
                                         for t in range(tasks) for v in range(3)])
        conn.execute(insert(ComparisonTask), [{"id": t + 1, "document_id": t + 1, "replication_target": 3,
                                               "round": t % 4, "priority": 0, "judgement_count": 3,
                                               "created_at": start} for t in range(tasks)])
        conn.execute(insert(TaskCandidate), [{"task_id": t + 1, "candidate_id": 3 * t + v + 1, "slot": v}
                                             for t in range(tasks) for v in range(3)])
        assignments, judged, ratings = [], [], []
        jid = 0
        for t in range(tasks):
            cands = [3 * t + v + 1 for v in range(3)]
            for r in rng.sample(range(raters), 3):
                jid += 1
                order = cands[:]
                rng.shuffle(order)
                lazy = r % 10 == 0  # every tenth rater mostly picks the first summary shown
                best = (order[0] if lazy and rng.random() < 0.8
                        else max(cands, key=lambda c: (c - cands[0]) + rng.random() * 2.5))
                when = start + timedelta(seconds=30 * jid)
                assignments.append({"id": jid, "task_id": t + 1, "rater_id": r + 1, "display_order": order,
                                    "status": "submitted", "leased_at": when, "completed_at": when})
                judged.append({"id": jid, "assignment_id": jid, "task_id": t + 1, "rater_id": r + 1,
                               "best_candidate_id": best, "all_unacceptable": False,
                               "time_taken_s": rng.uniform(20, 90), "created_at": when})
                ratings.extend({"judgement_id": jid, "candidate_id": c,
                                "quality": min(7, max(1, 3 + (c - cands[0]) + rng.choice((-1, 0, 0, 1)))),
                                "factual": rng.random() < 0.85} for c in cands)
        conn.execute(insert(Assignment), assignments)
        conn.execute(insert(Judgement), judged)
        conn.execute(insert(CandidateRating), ratings)
    engine.dispose()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--judgements", type=int, default=100_000)
    ap.add_argument("--raters", type=int, default=60)
    ap.add_argument("--bootstrap", type=int, default=200)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    url = f"sqlite:///{tempfile.mkdtemp(prefix='calibra-dash-')}/bench.db"
    t0 = time.perf_counter()
    generate(url, args.judgements, args.raters)
    generated = time.perf_counter() - t0
    engine = make_engine(url)
    sessions = session_factory(engine)
    t0 = time.perf_counter()
    with transaction(sessions) as db:
        frames = load_frames(db)
    loaded = time.perf_counter() - t0
    t0 = time.perf_counter()
    report = build_report(frames, rounds=args.bootstrap)
    computed = time.perf_counter() - t0
    result = {"judgements": len(frames.judgements), "raters": args.raters, "bootstrap": args.bootstrap,
              "generate_s": round(generated, 1), "load_s": round(loaded, 2), "report_s": round(computed, 2),
              "total_s": round(loaded + computed, 2),
              "quality_alpha_interval": report.overall["quality_alpha_interval"].value,
              "flagged_raters": sum(1 for r in report.raters if r["flags"]),
              "date": datetime.now(UTC).isoformat(timespec="seconds"), "cpus": os.cpu_count(),
              "python": platform.python_version()}
    print(json.dumps(result, indent=2) if args.json else "\n".join(f"{k:>24}  {v}" for k, v in result.items()))


if __name__ == "__main__":
    main()
