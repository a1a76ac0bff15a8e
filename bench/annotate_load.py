"""Load test of the annotation API: N simulated annotators on loopback.

The app runs as its own process (`calibra serve`). Each annotator logs in over HTTP and loops
next_task -> submit through the app's `next_task` and `submit` endpoints
(`POST /gradio_api/run/<name>`, the same endpoints `gradio_client` calls, or with `--api plain`
the JSON routes `POST /api/<name>`) until the queue is
empty, its request budget is spent or the time limit passes. Reported per N: judgements per second
and p50/p95 latency of each call.
Afterwards the database is checked: no judgement lost (every `{"stored": true}` has its row), none
duplicated, no task past its replication target.

Target: at N = 50 on SQLite, p95 under 250 ms for each call and zero lost or duplicated judgements.

`--round-running` measures each level twice, side by side: with the app's round worker idle, and
while it trains a round (round 0's supervised fine-tuning of the default policy on the real TL;DR
posts of `../shared/data/tldr/posts_test400.jsonl`), as `calibra serve` runs it beside the app.

    .venv/bin/python bench/annotate_load.py [--annotators 1 10 50] [--tasks 300] [--seconds 60]
        [--round-running] [--api gradio plain] [--processes 1 2 4] [--database sqlite|postgres] [--json]

Its seeding, serving, round and database checks are shared with `bench/crowd_load.py` (a locust
crowd, also on PostgreSQL) and `bench/export_under_load.py`.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Collection, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import func, select

from annotate.importing import import_files
from annotate.queue import open_tasks_query
from annotate.users import add_user
from app.config import load_settings
from app.context import Context, open_context
from db import (
    Assignment,
    AssignmentStatus,
    Candidate,
    CandidateOrigin,
    ComparisonTask,
    Document,
    Judgement,
    Rater,
    Role,
    TaskCandidate,
)
from db.local_postgres import free_port, throwaway_server
from db.models import digest, utcnow
from db.statistics import refresh_statistics
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
    acknowledged: list[int] = field(default_factory=list)  # assignment ids answered {"stored": true}
    errors: list[str] = field(default_factory=list)


def rater_names(n_raters: int) -> list[str]:
    """The annotator accounts `seed` creates, all with the password PASSWORD."""
    return [f"load{r}" for r in range(n_raters)]


def seed(ctx: Context, n_tasks: int, n_raters: int) -> None:
    with ctx.transaction() as db:
        for i in range(n_tasks):
            text = f"Load-test post {i}: a short story about a lost umbrella and a very long queue."
            doc = Document(source="load", title=f"Post {i}", text=text, content_hash=digest(text))
            cands = [Candidate(document=doc, text=f"summary {j} of post {i}", text_hash=digest(f"s{j}-{i}"),
                               origin=CandidateOrigin.IMPORTED) for j in range(3)]
            db.add(ComparisonTask(document=doc, replication_target=3,
                                  slots=[TaskCandidate(candidate=c, slot=j) for j, c in enumerate(cands)]))
        for name in rater_names(n_raters):
            add_user(db, name, Role.ANNOTATOR, PASSWORD)
        refresh_statistics(db)  # as an import or `calibra tasks` does after its bulk write


def open_home(home: Path, database_url: str | None = None) -> Context:
    """Settings for a fresh home (and database), in this process's environment so that the
    `calibra serve` started afterwards sees the same ones; the database upgraded to the newest schema."""
    os.environ["CALIBRA_HOME"] = str(home)
    if database_url is not None:
        os.environ["CALIBRA_DATABASE_URL"] = database_url
    else:
        os.environ.pop("CALIBRA_DATABASE_URL", None)
    os.environ.setdefault("CALIBRA_MODELS_DIR", str(MODELS))  # the round's worker loads the default policy
    return open_context(load_settings())


SUBMIT_FIELDS = ("assignment_id", "best", "quality", "factual", "strength", "all_unacceptable", "comment")


def call(client: httpx.Client, name: str, *args: object, api: str = "gradio", session: str = "") -> dict:
    """One call of the annotation API: Gradio's endpoints (`/gradio_api/run/<name>`, what
    gradio_client uses) or the plain JSON routes beside them (`/api/<name>`). `session` is the
    client's `session_hash`, as gradio_client sends one: without it Gradio builds its per-session
    state for every block of the app on every call."""
    if api == "plain":
        response = client.post(f"/api/{name}", json=dict(zip(SUBMIT_FIELDS, args, strict=False)))
        response.raise_for_status()
        return response.json()
    response = client.post(f"/gradio_api/run/{name}", json={"data": list(args), "session_hash": session})
    response.raise_for_status()
    return response.json()["data"][0]


def annotate(url: str, worker: Worker, stop: threading.Event, max_calls: int, think: float,
             ready: threading.Barrier, api: str = "gradio") -> None:
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
            task = call(client, "next_task", api=api, session=worker.name)["task"]
            worker.next_ms.append((time.perf_counter() - t0) * 1000)
            if task is None:
                return
            letters = [s["letter"] for s in task["summaries"]]
            time.sleep(think * rng.uniform(0.5, 1.5))
            t0 = time.perf_counter()
            try:
                out = call(client, "submit", task["assignment_id"], letters[0], {c: 5 for c in letters},
                           {c: True for c in letters}, "better", False, "", api=api, session=worker.name)
                if out.get("stored"):
                    worker.acknowledged.append(task["assignment_id"])
            except httpx.HTTPError as exc:
                worker.errors.append(str(exc)[:200])
            worker.submit_ms.append((time.perf_counter() - t0) * 1000)


def start_training(ctx: Context) -> int:
    """Documents with human references and a requested round 0 (SFT), which the app's worker
    picks up as soon as it starts."""
    with ctx.transaction() as db:
        round_ = request_round(db, RoundOptions(eval_docs=5), "bench")
        number = round_.number
    import_files(ctx.transaction, [POSTS], source="tldr-test")
    return number


def wait_for_training(ctx: Context, number: int, timeout: float = 600) -> None:
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


def round_stages(ctx: Context, number: int) -> dict[str, Any]:
    """The round's status and each stage's status and progress (step of total), as stored."""
    with ctx.reading() as db:
        round_ = find_round(db, number)
        return {"status": round_.status.value, "reason": round_.reason,
                "stages": {s.name: {"status": s.status.value, "step": (s.progress or {}).get("step", 0),
                                    "total": (s.progress or {}).get("total")} for s in round_.stages}}


def start_server(home: Path, port: int, log: Path | None = None, worker: bool = True) -> subprocess.Popen[bytes]:
    """`calibra serve` (the app, and its round worker unless `worker` is False) on loopback, with
    this process's settings; its output goes to `log` (nowhere without one)."""
    env = {**os.environ, "CALIBRA_HOME": str(home)}
    # The child writes to its own copy of the descriptor: this one closes once it has started.
    with open(log or os.devnull, "wb") as out:
        server = subprocess.Popen([sys.executable, "-m", "app.cli", "serve", "--host", "127.0.0.1",
                                   "--port", str(port), *([] if worker else ["--no-worker"])],
                                  env=env, stdout=out, stderr=subprocess.STDOUT)
    for _ in range(120):
        try:
            httpx.get(f"http://127.0.0.1:{port}/", timeout=1)
            return server
        except httpx.HTTPError:
            if server.poll() is not None:
                break
            time.sleep(0.5)
    server.kill()
    raise RuntimeError(f"the app did not start{f'; see {log}' if log else ''}")


def stop_server(server: subprocess.Popen[bytes]) -> None:
    """SIGTERM, as a service manager stops it: the app ends and takes its worker with it."""
    server.terminate()
    try:
        server.wait(timeout=30)
    except subprocess.TimeoutExpired:
        server.kill()
        server.wait()


@contextmanager
def postgres_server() -> Iterator[str]:
    """A throw-away PostgreSQL server (`db.local_postgres`) with an empty database; yields its
    SQLAlchemy URL. fsync stays on (unlike the tests' server): the figures include durable commits,
    as deployed."""
    import psycopg

    with throwaway_server(fsync=True) as admin:
        with psycopg.connect(admin.replace("postgresql+psycopg", "postgresql"), autocommit=True) as conn:
            conn.execute("CREATE DATABASE calibra_load")
        yield admin.rsplit("/", 1)[0] + "/calibra_load"


def check_database(ctx: Context, acknowledged: Collection[int], lease: timedelta) -> dict[str, int]:
    """After the app has stopped: every acknowledged judgement stored exactly once, no task past
    its replication target, no lease held longer than `lease` from now, and once the leases have
    expired every task below its target open again. Each figure counts violations (0 is a pass),
    except `judgements` and `unacknowledged` (stored, but the client never saw the reply: a request
    cut off by the end of the run)."""
    now = utcnow()
    with ctx.reading() as db:
        per_assignment = Counter(db.scalars(select(Judgement.assignment_id)))
        per_pair = Counter(tuple(r) for r in db.execute(select(Judgement.task_id, Judgement.rater_id)))
        per_task = Counter(db.scalars(select(Judgement.task_id)))
        tasks = {t: (target, column) for t, target, column in db.execute(
            select(ComparisonTask.id, ComparisonTask.replication_target, ComparisonTask.judgement_count))}
        leases = list(db.scalars(select(Assignment.lease_expires_at)
                                 .where(Assignment.status == AssignmentStatus.LEASED)))
        with_text = set(db.scalars(select(ComparisonTask.id).join(Document, Document.id == ComparisonTask.document_id)
                                   .where(Document.has_text.is_(True))))
        # A rater with no judgement, skip or lease (no account has this id) sees every task the
        # queue would offer anyone once every lease now held has expired.
        nobody = (db.scalar(select(func.max(Rater.id))) or 0) + 1
        after_expiry = now + lease + timedelta(seconds=1)
        reopened = set(db.scalars(open_tasks_query(nobody, after_expiry)))
    acked = set(acknowledged)
    below_target = {t for t, (target, _) in tasks.items() if per_task[t] < target and t in with_text}
    return {
        "judgements": sum(per_assignment.values()),
        "lost": sum(1 for a in acked if per_assignment[a] == 0),
        "duplicated": sum(c - 1 for c in per_assignment.values() if c > 1)
        + sum(c - 1 for c in per_pair.values() if c > 1),
        "unacknowledged": sum(1 for a in per_assignment if a not in acked),
        "over_target": sum(1 for t, c in per_task.items() if c > tasks[t][0]),
        "count_mismatch": sum(1 for t, (_, column) in tasks.items() if column != per_task[t]),
        "stuck_leases": sum(1 for e in leases if e is None or e > now + lease),
        "not_reopened": len(below_target - reopened),
    }


def pct(values: list[float], q: float) -> float:
    return (statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1] if len(values) > 1
            else (values or [0])[0])


def run_level(n: int, tasks: int, seconds: float, max_calls: int, think: float,
              round_running: bool = False, api: str = "gradio", processes: int = 1,
              database_url: str | None = None) -> dict[str, object]:
    """One measurement: `n` annotators spread over `processes` app processes (sessions live in
    the database, so any process accepts any login), on SQLite or on `database_url`."""
    home = Path(tempfile.mkdtemp(prefix=f"calibra-load-{n}-"))
    ctx = open_home(home, database_url)
    seed(ctx, tasks, n)
    number = start_training(ctx) if round_running else None
    ports = [free_port() for _ in range(processes)]
    servers = [start_server(home, port, worker=i == 0) for i, port in enumerate(ports)]
    if number is not None:
        wait_for_training(ctx, number)
    workers = [Worker(name) for name in rater_names(n)]
    ready, stop = threading.Barrier(n + 1), threading.Event()
    threads = [threading.Thread(target=annotate, args=(f"http://127.0.0.1:{ports[i % processes]}/", w, stop, max_calls,
                                                       think, ready, api)) for i, w in enumerate(workers)]
    for t in threads:
        t.start()
    ready.wait()  # the time limit counts from the start of the timed loop, after the logins
    timer = threading.Timer(seconds, stop.set)
    timer.start()
    start = time.perf_counter()
    for t in threads:
        t.join()
    timer.cancel()
    elapsed = time.perf_counter() - start
    for server in servers:
        stop_server(server)
    checks = check_database(ctx, [a for w in workers for a in w.acknowledged],
                            timedelta(minutes=ctx.settings.lease_minutes))
    rows = checks["judgements"]
    next_ms = [x for w in workers for x in w.next_ms]
    submit_ms = [x for w in workers for x in w.submit_ms]
    if number is not None:
        with ctx.transaction() as db:  # the round must still have been training when the level ended
            still = find_round(db, number).status
    return {
        "api": api, "processes": processes, "annotators": n, "think_s": think,
        "round_running": None if number is None else still.value,
        "seconds": round(elapsed, 1), "judgements": rows,
        "judgements_per_s": round(rows / elapsed, 1),
        "next_task_p50_ms": round(pct(next_ms, 50), 1), "next_task_p95_ms": round(pct(next_ms, 95), 1),
        "submit_p50_ms": round(pct(submit_ms, 50), 1), "submit_p95_ms": round(pct(submit_ms, 95), 1),
        "lost": checks["lost"], "duplicated": checks["duplicated"], "over_target": checks["over_target"],
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
    ap.add_argument("--api", nargs="+", choices=("gradio", "plain"), default=["gradio"],
                    help="Gradio's endpoints, the plain JSON routes, or both side by side")
    ap.add_argument("--processes", type=int, nargs="+", default=[1], help="app processes sharing the crowd")
    ap.add_argument("--database", choices=("sqlite", "postgres"), default="sqlite",
                    help="postgres: a throw-away server from Debian's binaries, a new one per level")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    modes = (False, True) if args.round_running else (False,)

    def level(n: int, think: float, mode: bool, api: str, processes: int) -> dict[str, object]:
        if args.database == "sqlite":
            return run_level(n, args.tasks, args.seconds, args.max_calls, think, mode, api, processes)
        with postgres_server() as url:
            return run_level(n, args.tasks, args.seconds, args.max_calls, think, mode, api, processes, url)

    results = [level(n, think, mode, api, processes) for think in args.think for n in args.annotators
               for mode in modes for api in args.api for processes in args.processes]
    meta = {"date": datetime.now(UTC).isoformat(timespec="seconds"), "python": platform.python_version(),
            "cpus": os.cpu_count(), "database": args.database}
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
