"""Load test of the annotation API: N simulated annotators on loopback.

The app runs as its own process (`calibra serve`). Each annotator logs in over HTTP and loops
next_task -> submit through the app's `next_task` and `submit` endpoints
(`POST /gradio_api/run/<name>`, the same endpoints `gradio_client` calls) until the queue is
empty, its request budget is spent or the time limit passes. Reported per N: judgements per second
and p50/p95 latency of each call.
Afterwards the database is checked: no judgement lost (every `{"stored": true}` has its row), none
duplicated, no task past its replication target.

Target: at N = 50 on SQLite, p95 under 250 ms for each call and zero lost or duplicated judgements.

`--round-running` measures each level twice, side by side: with the app's round worker idle, and
while it trains a round (round 0's supervised fine-tuning of the default policy on the real TL;DR
posts of `../shared/data/tldr/posts_test400.jsonl`), as `calibra serve` runs it beside the app.

    .venv/bin/python bench/annotate_load.py [--annotators 1 10 50] [--tasks 300] [--seconds 60]
        [--round-running] [--json]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import httpx
from sqlalchemy import func, select

from annotate.importing import import_files
from annotate.users import add_user
from app.config import load_settings
from app.context import open_context
from db import (
    Candidate,
    CandidateOrigin,
    ComparisonTask,
    Document,
    Judgement,
    Role,
    TaskCandidate,
)
from db.models import digest
from training.rounds.config import RoundOptions
from training.rounds.store import find_round, request_round

PASSWORD = "load-test-pass"
POSTS = Path(__file__).resolve().parents[2] / "shared" / "data" / "tldr" / "posts_test400.jsonl"
MODELS = Path(__file__).resolve().parents[1] / ".calibra" / "models"


@dataclass
class Worker:
    name: str
    next_ms: list[float] = field(default_factory=list)
    submit_ms: list[float] = field(default_factory=list)
    stored: int = 0
    errors: list[str] = field(default_factory=list)


def seed(ctx, n_tasks: int, n_raters: int) -> None:  # type: ignore[no-untyped-def]
    with ctx.transaction() as db:
        for i in range(n_tasks):
            text = f"Load-test post {i}: a short story about a lost umbrella and a very long queue."
            doc = Document(source="load", title=f"Post {i}", text=text, content_hash=digest(text))
            cands = [Candidate(document=doc, text=f"summary {j} of post {i}", text_hash=digest(f"s{j}-{i}"),
                               origin=CandidateOrigin.IMPORTED) for j in range(3)]
            db.add(ComparisonTask(document=doc, replication_target=3,
                                  slots=[TaskCandidate(candidate=c, slot=j) for j, c in enumerate(cands)]))
        for r in range(n_raters):
            add_user(db, f"load{r}", Role.ANNOTATOR, PASSWORD)


def call(client: httpx.Client, name: str, *args: object) -> dict:
    response = client.post(f"/gradio_api/run/{name}", json={"data": list(args)})
    response.raise_for_status()
    return response.json()["data"][0]


def annotate(url: str, worker: Worker, stop: threading.Event, max_calls: int, think: float,
             ready: threading.Barrier) -> None:
    rng = random.Random(worker.name)
    with httpx.Client(base_url=url, timeout=60) as client:
        # Logging in checks a bcrypt hash (a quarter of a second of CPU by design): everyone logs
        # in first, and the timed loop starts together once all are in.
        client.post("/login", data={"username": worker.name, "password": PASSWORD}).raise_for_status()
        ready.wait()
        time.sleep(think * rng.random())  # people arrive spread out, not on the same millisecond
        for _ in range(max_calls):
            if stop.is_set():
                return
            t0 = time.perf_counter()
            task = call(client, "next_task")["task"]
            worker.next_ms.append((time.perf_counter() - t0) * 1000)
            if task is None:
                return
            letters = [s["letter"] for s in task["summaries"]]
            time.sleep(think * rng.uniform(0.5, 1.5))
            t0 = time.perf_counter()
            try:
                out = call(client, "submit", task["assignment_id"], letters[0], {c: 5 for c in letters},
                           {c: True for c in letters}, "better", False, "")
                worker.stored += bool(out.get("stored"))
            except httpx.HTTPError as exc:
                worker.errors.append(str(exc)[:200])
            worker.submit_ms.append((time.perf_counter() - t0) * 1000)


def start_training(ctx) -> int:  # type: ignore[no-untyped-def]
    """Documents with human references and a requested round 0 (SFT), which the app's worker
    picks up as soon as it starts."""
    with ctx.transaction() as db:
        round_ = request_round(db, RoundOptions(eval_docs=5), "bench")
        number = round_.number
    import_files(ctx.transaction, [POSTS], source="tldr-test")
    return number


def wait_for_training(ctx, number: int, timeout: float = 600) -> None:  # type: ignore[no-untyped-def]
    """Until the worker has loaded the policy and takes optimizer steps."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with ctx.transaction() as db:
            round_ = find_round(db, number)
            if any((s.progress or {}).get("step", 0) >= 1 for s in round_.stages):
                return
            if round_.status.value in ("failed", "cancelled", "skipped"):
                raise RuntimeError(f"round {number} {round_.status.value}: {round_.reason}")
        time.sleep(1)
    raise RuntimeError("the worker did not start training")


def start_server(home: Path, port: int) -> subprocess.Popen:
    env = {**os.environ, "CALIBRA_HOME": str(home)}
    server = subprocess.Popen([sys.executable, "-m", "app.cli", "serve", "--port", str(port)], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(120):
        try:
            httpx.get(f"http://127.0.0.1:{port}/", timeout=1)
            return server
        except httpx.HTTPError:
            time.sleep(0.5)
    server.kill()
    raise RuntimeError("the app did not start")


def pct(values: list[float], q: float) -> float:
    return (statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1] if len(values) > 1
            else (values or [0])[0])


def run_level(n: int, tasks: int, seconds: float, max_calls: int, think: float,
              round_running: bool = False) -> dict[str, object]:
    home = Path(tempfile.mkdtemp(prefix=f"calibra-load-{n}-"))
    os.environ["CALIBRA_HOME"] = str(home)
    os.environ.setdefault("CALIBRA_MODELS_DIR", str(MODELS))  # the round's worker loads the default policy
    ctx = open_context(load_settings())
    seed(ctx, tasks, n)
    number = start_training(ctx) if round_running else None
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = start_server(home, port)
    if number is not None:
        wait_for_training(ctx, number)
    workers = [Worker(f"load{r}") for r in range(n)]
    ready, stop = threading.Barrier(n + 1), threading.Event()
    threads = [threading.Thread(target=annotate, args=(f"http://127.0.0.1:{port}/", w, stop, max_calls, think, ready))
               for w in workers]
    [t.start() for t in threads]
    ready.wait()  # the time limit counts from the start of the timed loop, after the logins
    timer = threading.Timer(seconds, stop.set)
    timer.start()
    start = time.perf_counter()
    [t.join() for t in threads]
    timer.cancel()
    elapsed = time.perf_counter() - start
    server.terminate()
    server.wait(timeout=30)
    with ctx.transaction() as db:
        rows = db.scalar(select(func.count()).select_from(Judgement)) or 0
        per_pair = Counter(tuple(r) for r in db.execute(select(Judgement.task_id, Judgement.rater_id)))
        per_task = Counter(db.scalars(select(Judgement.task_id)))
        targets = {t: n for t, n in db.execute(select(ComparisonTask.id, ComparisonTask.replication_target))}
    stored = sum(w.stored for w in workers)
    next_ms = [x for w in workers for x in w.next_ms]
    submit_ms = [x for w in workers for x in w.submit_ms]
    if number is not None:
        with ctx.transaction() as db:  # the round must still have been training when the level ended
            still = find_round(db, number).status
    return {
        "annotators": n, "think_s": think, "round_running": None if number is None else still.value,
        "seconds": round(elapsed, 1), "judgements": rows,
        "judgements_per_s": round(rows / elapsed, 1),
        "next_task_p50_ms": round(pct(next_ms, 50), 1), "next_task_p95_ms": round(pct(next_ms, 95), 1),
        "submit_p50_ms": round(pct(submit_ms, 50), 1), "submit_p95_ms": round(pct(submit_ms, 95), 1),
        "lost": stored - rows if stored > rows else 0,
        "duplicated": sum(c - 1 for c in per_pair.values() if c > 1),
        "over_target": sum(1 for t, c in per_task.items() if c > targets[t]),
        "errors": sum(len(w.errors) for w in workers),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--annotators", type=int, nargs="+", default=[1, 10, 50])
    ap.add_argument("--tasks", type=int, default=300, help="tasks of 3 summaries, 3 judgements each")
    ap.add_argument("--seconds", type=float, default=60, help="time limit per level")
    ap.add_argument("--max-calls", type=int, default=40, help="next_task+submit rounds per annotator")
    ap.add_argument("--think", type=float, nargs="+", default=[5.0], help="seconds an annotator reads (0: none)")
    ap.add_argument("--round-running", action="store_true",
                    help="each level also while the worker beside the app trains a round")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    modes = (False, True) if args.round_running else (False,)
    results = [run_level(n, args.tasks, args.seconds, args.max_calls, think, mode)
               for think in args.think for n in args.annotators for mode in modes]
    meta = {"date": datetime.now(UTC).isoformat(timespec="seconds"), "python": platform.python_version(),
            "cpus": os.cpu_count(), "database": "sqlite"}
    if args.json:
        print(json.dumps({"meta": meta, "results": results}, indent=2))
        return
    cols = list(results[0])
    print("  ".join(f"{c:>16}" for c in cols))
    for r in results:
        print("  ".join(f"{r[c]!s:>16}" for c in cols))
    print(meta)


if __name__ == "__main__":
    main()
