"""Annotators' submit latency while an admin exports every judgement, side by side with no export.

A SQLite database is filled with `--judgements` synthetic judgements (3 per task, every summary
rated: `bench/dashboard.py`'s generator) and a queue of open tasks with annotator accounts
(`bench/annotate_load.py`'s seed). Then `--annotators` threads loop next task -> read for
`think` x U(0.5, 1.5) seconds -> submit, calling `annotate.queue.next_assignment` and
`annotate.submissions.submit` in one `ctx.transaction()` each, as the web app does, in three
phases of one run:

- idle: no export, for `--idle-seconds`;
- export, reading: another process loads every judgement with its provenance
  (`judgements_table`, what `calibra export judgements` runs) in `ctx.reading()`, a read-only
  snapshot, and writes it as JSONL;
- export, write transaction: the same export in `ctx.transaction()`, which takes SQLite's
  write lock (`BEGIN IMMEDIATE`) for the whole read, as exports did before `ctx.reading()`.

Reported per phase: the submits started while the export's transaction was open (all of them
when idle) and their rate, their p50/p95/p99 latency (the submit's transaction, waiting for the
write lock included), requests that failed (SQLite's 30 s busy timeout), and the export's reading
and writing seconds.

    .venv/bin/python bench/export_under_load.py [--judgements 100000] [--annotators 4] [--think 0.2]
        [--idle-seconds 20] [--json]
"""
from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import random
import tempfile
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from annotate_load import pct, seed
from dashboard import generate
from sqlalchemy import select
from sqlalchemy.exc import OperationalError

from annotate.export import judgements_table, write_table
from annotate.queue import QueuePolicy, next_assignment
from annotate.submissions import LETTERS, Submission, SummaryRating, submit
from app.config import load_settings
from app.context import Context, open_context
from db import Rater

POLICY = QueuePolicy(gold_rate=0.0)


@dataclass
class Annotator:
    rater_id: int
    submits: list[tuple[float, float]] = field(default_factory=list)  # (started at, milliseconds)
    errors: list[str] = field(default_factory=list)


def annotate(ctx: Context, who: Annotator, think: float, stop: threading.Event) -> None:
    rng = random.Random(who.rater_id)
    while not stop.is_set():
        try:
            with ctx.transaction() as db:
                assignment = next_assignment(db, db.get_one(Rater, who.rater_id), POLICY, rng=rng)
                if assignment is None:
                    raise RuntimeError("the queue ran dry: seed more tasks (--tasks)")
                assignment_id, letters = assignment.id, LETTERS[:len(assignment.display_order)]
            time.sleep(think * rng.uniform(0.5, 1.5))
            answer = Submission(best=letters[0], ratings={k: SummaryRating(5, True) for k in letters},
                                strength="better")
            started, t0 = time.time(), time.perf_counter()
            try:
                with ctx.transaction() as db:
                    submit(db, assignment_id, db.get_one(Rater, who.rater_id), answer)
            finally:  # a submit that fails after waiting counts with its wait
                who.submits.append((started, (time.perf_counter() - t0) * 1000))
        except OperationalError as exc:  # "database is locked" after the busy timeout: counted, not fatal
            who.errors.append(str(exc)[:200])


def export_judgements(home: str, out: str, hold_write_lock: bool, times: Any) -> None:
    """The export, in a process of its own as an admin's `calibra export judgements` runs."""
    os.environ["CALIBRA_HOME"] = home
    ctx = open_context(load_settings())
    begun = time.time()
    with (ctx.transaction() if hold_write_lock else ctx.reading()) as db:
        table = judgements_table(db)
    read = time.time()
    write_table(table, Path(out), "jsonl")
    times.put((begun, read, time.time(), len(table)))


def run_phase(ctx: Context, raters: list[int], think: float, export: str | None,
              idle_seconds: float) -> dict[str, Any]:
    annotators = [Annotator(r) for r in raters]
    stop = threading.Event()
    threads = [threading.Thread(target=annotate, args=(ctx, a, think, stop)) for a in annotators]
    for t in threads:
        t.start()
    result: dict[str, Any] = {"phase": export or "no export"}
    if export is None:
        begun = time.time()
        time.sleep(idle_seconds)
        window = (begun, time.time())
    else:
        spawn = multiprocessing.get_context("spawn")
        times = spawn.Queue()
        child = spawn.Process(target=export_judgements, args=(str(ctx.settings.home),
                                                              str(ctx.settings.home / "judgements.jsonl"),
                                                              export == "export, write transaction", times))
        child.start()
        child.join()
        if child.exitcode != 0:
            raise RuntimeError(f"the export failed (exit status {child.exitcode})")
        begun, read, written, rows = times.get(timeout=10)
        window = (begun, read)
        result |= {"exported": rows, "export_read_s": round(read - begun, 1),
                   "export_write_s": round(written - read, 1)}
    stop.set()
    for t in threads:
        t.join()
    latencies = [ms for a in annotators for started, ms in a.submits if window[0] <= started <= window[1]]
    return result | {
        "submits": len(latencies), "submits_per_s": round(len(latencies) / (window[1] - window[0]), 1),
        "p50_ms": round(pct(latencies, 50), 1), "p95_ms": round(pct(latencies, 95), 1),
        "p99_ms": round(pct(latencies, 99), 1), "max_ms": round(max(latencies, default=0), 1),
        "failed": sum(len(a.errors) for a in annotators)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--judgements", type=int, default=100_000, help="judgements in the database before the load")
    ap.add_argument("--annotators", type=int, default=4)
    ap.add_argument("--think", type=float, default=0.2, help="seconds an annotator reads before submitting")
    ap.add_argument("--tasks", type=int, default=3000, help="open tasks of 3 summaries, 3 judgements each")
    ap.add_argument("--idle-seconds", type=float, default=20)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    home = Path(tempfile.mkdtemp(prefix="calibra-export-load-"))
    os.environ["CALIBRA_HOME"] = str(home)
    settings = load_settings()
    t0 = time.perf_counter()
    generate(settings.database_url, args.judgements, raters=60)
    ctx = open_context(settings)
    seed(ctx, args.tasks, args.annotators)
    with ctx.transaction() as db:
        raters = list(db.scalars(select(Rater.id).where(Rater.name.like("load%"))))
    filled = time.perf_counter() - t0

    results = [run_phase(ctx, raters, args.think, export, args.idle_seconds)
               for export in (None, "export, reading", "export, write transaction")]
    meta = {"judgements": args.judgements, "annotators": args.annotators, "think_s": args.think,
            "fill_s": round(filled, 1), "date": datetime.now(UTC).isoformat(timespec="seconds"),
            "cpus": os.cpu_count(), "python": platform.python_version(), "database": "sqlite"}
    if args.json:
        print(json.dumps({"meta": meta, "results": results}, indent=2))
        return
    cols = list(results[-1])  # an export phase has every column
    print("  ".join(f"{c:>25}" for c in cols))
    for r in results:
        print("  ".join(f"{r.get(c, '-')!s:>25}" for c in cols))
    print(meta)


if __name__ == "__main__":
    main()
