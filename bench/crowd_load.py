"""A crowd of annotators on the running app, driven by locust, then the database checked.

`--users` annotators (`bench/locustfile.py`), each with its own account, log in and loop
next_task -> read for a log-normal time around `--think-seconds` -> submit against `calibra serve`
(the app and its round worker, as deployed) on 127.0.0.1, for `--minutes`. Locust runs headless
and bounded: at most `--users` users, started at `--spawn-rate` per second, stopped after the time.
With `--round-running` (the default) a training round is requested before the app starts (round
0's supervised fine-tuning of the default policy on the real TL;DR posts), and the crowd starts
once the worker takes optimizer steps, so training overlaps the whole run.

Afterwards, with the app stopped, the database is checked (`annotate_load.check_database`): every
judgement the app acknowledged with {"stored": true} is stored exactly once, no task has more
judgements than its replication target (nor a judgement_count that disagrees with its rows), no
lease outlives lease_minutes from now, and once the leases have expired every task below its
target is open again.

With `--api plain` the crowd calls the JSON routes (`POST /api/<name>`) instead of Gradio's
endpoints. With `--browser` one more annotator works in Chromium on the annotation page beside the
crowd (`bench/browser_probe.py`), reading for `--browser-think-seconds`, and its submit-to-next-task
times are reported too.

Reported: p50/p95/p99 per call (locust's own percentiles from its CSV, rounded as locust rounds them),
beside the app's own timings of the same calls (its `request_log`, from arrival to the last byte):
where the two differ much, the load generator's own queueing, not the app, made the difference;
requests, failures and their messages, judgements per second, the checks, the round's progress
during the run, and the machine's load average during the run (other work may share it). The exit
status is 1 when a request failed or a check did not pass.

    .venv/bin/python bench/crowd_load.py [--database sqlite|postgres] [--users 100] [--spawn-rate 10]
        [--minutes 5 | --seconds S] [--think-seconds 30] [--no-round-running] [--tasks N]
        [--api gradio|plain] [--browser [--browser-think-seconds 3]] [--json]
"""
from __future__ import annotations

import argparse
import csv
import importlib.util
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from annotate_load import (
    PASSWORD,
    check_database,
    free_port,
    open_home,
    postgres_server,
    rater_names,
    round_stages,
    seed,
    start_server,
    start_training,
    stop_server,
    wait_for_training,
)
from browser_probe import BrowserProbe
from sqlalchemy import func, select

from app.context import Context
from db import Judgement, Rater

LOCUSTFILE = Path(__file__).with_name("locustfile.py")
CALLS = ("login", "next_task", "submit")
REPLICATION = 3  # seed()'s replication target per task
CHECKS = ("lost", "duplicated", "over_target", "count_mismatch", "stuck_leases", "not_reopened")


def tasks_needed(users: int, seconds: float, think: float) -> int:
    """Enough tasks that the crowd never runs dry: twice the judgements it could make if every
    request answered at once (a log-normal reading time with sigma 0.5 averages 1.13 / median
    judgements per second), plus one task per annotator for the leases held at the end."""
    most = users * seconds * 1.13 / max(think, 0.01)
    return math.ceil(2 * most / REPLICATION) + users


@contextmanager
def database(kind: str) -> Iterator[str | None]:
    """The database URL for the run: SQLite under the run's home (None), or a fresh PostgreSQL."""
    if kind == "postgres":
        with postgres_server() as url:
            yield url
    else:
        yield None


class LoadSampler:
    """The 1-minute load average every few seconds while the crowd runs: the machine may be shared."""

    def __init__(self, every_s: float = 5.0) -> None:
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(every_s,), daemon=True)

    def _run(self, every_s: float) -> None:
        while not self._stop.wait(every_s):
            self.samples.append(os.getloadavg()[0])

    def __enter__(self) -> LoadSampler:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()


def run_locust(host: str, users: int, spawn_rate: float, seconds: int, think: float, api: str,
               folder: Path, steady: bool = False) -> dict[str, Any]:
    """Locust headless against `host`, bounded in users, spawn rate and time; its CSV statistics
    under `folder`. Returns its exit status, whether it warned that its own CPU was saturated (its
    timings are then unreliable), and the acknowledged assignment ids."""
    env = {**os.environ, "CROWD_ACCOUNTS": ",".join(rater_names(users)), "CROWD_PASSWORD": PASSWORD,
           "CROWD_THINK_S": str(think), "CROWD_API": api, "CROWD_ACK_DIR": str(folder / "acks")}
    cmd = [sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless", "-u", str(users),
           "-r", str(spawn_rate), "-t", f"{seconds}s", "--host", host, "--csv", str(folder / "locust"),
           "--only-summary", *(["--reset-stats"] if steady else [])]
    log = folder / "locust.log"
    with open(log, "wb") as out:
        # The time limit is locust's; this one only guards against a locust that never ends.
        done = subprocess.run(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, timeout=seconds + 300)
    text = log.read_text(errors="replace")
    # 0: no failure; 1: some request failed (reported below); anything else: locust itself failed.
    if done.returncode not in (0, 1):
        raise RuntimeError(f"locust exited with {done.returncode}:\n{text[-3000:]}")
    acks = [int(line) for f in sorted((folder / "acks").glob("acks-*.txt")) for line in f.read_text().split()]
    return {"exit_status": done.returncode, "cpu_warning": "CPU usage above" in text, "acknowledged": acks}


def _ms(row: dict[str, str], key: str) -> float:
    return float(row[key]) if row[key] not in ("", "N/A") else 0.0


def read_stats(folder: Path) -> tuple[dict[str, dict[str, float]], list[dict[str, Any]]]:
    """Per request name: requests, failures, p50/p95/p99 and max (ms); and the failures' messages.
    From the CSV the locustfile writes when locust quits (`--csv` files miss the last second)."""
    with open(folder / "locust_final_stats.csv", newline="") as f:
        calls = {row["Name"]: {"requests": int(row["Request Count"]), "failures": int(row["Failure Count"]),
                               "p50_ms": _ms(row, "50%"), "p95_ms": _ms(row, "95%"), "p99_ms": _ms(row, "99%"),
                               "max_ms": _ms(row, "Max Response Time")} for row in csv.DictReader(f)}
    with open(folder / "locust_final_failures.csv", newline="") as f:
        failures = [{"name": r["Name"], "error": r["Error"], "occurrences": int(r["Occurrences"])}
                    for r in csv.DictReader(f)]
    return calls, failures


def server_timings(log: Path, since: float) -> dict[str, dict[str, float]]:
    """The app's own timings of `next_task` and `submit` (its `request_log`), for the requests
    that arrived after `since` (unix time), by the nearest-rank percentile."""
    times: dict[str, list[float]] = {name: [] for name in CALLS[1:]}
    for line in log.read_text().splitlines() if log.exists() else []:
        at, _, path, _, ms = line.split("\t")
        name = path.rsplit("/", 1)[-1]
        if name in times and float(at) >= since and path in (f"/api/{name}", f"/gradio_api/run/{name}"):
            times[name].append(float(ms))

    def pct(values: list[float], q: float) -> float:
        return round(values[min(len(values) - 1, int(q * len(values)))], 1) if values else 0.0

    return {name: {"requests": len(v), "p50_ms": pct(sorted(v), 0.5), "p95_ms": pct(sorted(v), 0.95),
                   "p99_ms": pct(sorted(v), 0.99)} for name, v in times.items()}


def trained_meanwhile(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    """Optimizer steps each stage took between the crowd's start and its end."""
    steps = {name: {"from": before["stages"].get(name, {}).get("step", 0), "to": s["step"], "total": s["total"],
                    "status": s["status"]} for name, s in after["stages"].items()}
    return {"status": after["status"], "reason": after["reason"], "stages": steps,
            "steps_during_run": sum(s["to"] - s["from"] for s in steps.values())}


def machine() -> dict[str, Any]:
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").exists() else ""
    return {"cpu": model, "cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()}


def browser_judgements(ctx: Context, name: str) -> int:
    with ctx.reading() as db:
        return db.scalar(select(func.count()).select_from(Judgement).join(Rater).where(Rater.name == name)) or 0


def run(db_kind: str, users: int, spawn_rate: float, seconds: int, think: float, round_running: bool,
        tasks: int | None, keep: bool, api: str = "gradio", browser_think: float | None = None,
        steady: bool = False) -> dict[str, Any]:
    home = Path(tempfile.mkdtemp(prefix=f"calibra-crowd-{db_kind}-"))
    started = datetime.now(UTC)
    with database(db_kind) as url:
        ctx = open_home(home, url)
        # The browser judges each task once, at most one per reading time.
        n_tasks = tasks or (tasks_needed(users, seconds, think)
                            + (math.ceil(seconds / browser_think) if browser_think else 0))
        t0 = time.perf_counter()
        # The browser's account is the one after the crowd's.
        seed(ctx, n_tasks, users + 1)
        probe_name = rater_names(users + 1)[-1]
        seed_s = time.perf_counter() - t0
        number = start_training(ctx) if round_running else None
        port = free_port()
        os.environ["CALIBRA_REQUEST_LOG"] = str(home / "requests.tsv")  # the app's own timings
        server = start_server(home, port, log=home / "serve.log")
        try:
            before = None
            if number is not None:
                wait_for_training(ctx, number)
                before = round_stages(ctx, number)
            url = f"http://127.0.0.1:{port}"
            ramp_s = users / spawn_rate if steady else 0
            probe: AbstractContextManager[object] = (
                BrowserProbe(f"{url}/", probe_name, PASSWORD, browser_think, warm_up_s=ramp_s)
                if browser_think else nullcontext())
            counted_from = time.time() + ramp_s
            with LoadSampler() as load, probe:
                crowd = run_locust(url, users, spawn_rate, seconds, think, api, home, steady)
            after = round_stages(ctx, number) if number is not None else None
        finally:
            stop_server(server)
        checks = check_database(ctx, crowd["acknowledged"], timedelta(minutes=ctx.settings.lease_minutes))
        round_after_stop = round_stages(ctx, number)["status"] if number is not None else None
        browser = None
        if isinstance(probe, BrowserProbe):
            browser = {**probe.result(), "think_median_s": browser_think,
                       "judgements_stored": browser_judgements(ctx, probe_name)}
        ctx.engine.dispose()
    calls, failures = read_stats(home)
    server = server_timings(home / "requests.tsv", counted_from)
    acked = len(set(crowd["acknowledged"]))
    result = {
        "meta": {"date": started.isoformat(timespec="seconds"), "database": db_kind, "users": users,
                 "spawn_rate": spawn_rate, "seconds": seconds, "api": api, "steady": steady,
                 "think_median_s": think, "tasks": n_tasks,
                 "seed_s": round(seed_s, 1), "machine": machine(),
                 "load_average_1m": {"mean": round(sum(load.samples) / len(load.samples), 2) if load.samples else None,
                                     "max": max(load.samples, default=None)},
                 "locust_cpu_warning": crowd["cpu_warning"]},
        "calls": {name: calls[name] for name in (*CALLS, "next_task (queue empty)") if name in calls},
        "all_calls": calls.get("Aggregated"),
        # What the crowd measured less what the app measured: the network and the load
        # generator's own queueing. Large differences mean locust, not the app, was the limit.
        "server": server,
        "crowd_minus_server_ms": {name: {q: round(calls[name][q] - server[name][q], 1) for q in ("p50_ms", "p95_ms")}
                                  for name in server if name in calls and server[name]["requests"]},
        "failures": failures,
        "browser": browser,
        "acknowledged": acked, "acknowledged_twice": len(crowd["acknowledged"]) - acked,
        "judgements_per_s": round(acked / seconds, 2),
        "checks": checks,
        "passed": all(checks[c] == 0 for c in CHECKS) and (browser is None or browser["error"] is None),
        "round": None if before is None or after is None else {**trained_meanwhile(before, after),
                                                               "after_app_stopped": round_after_stop},
    }
    if keep:
        result["meta"]["home"] = str(home)
    else:
        shutil.rmtree(home, ignore_errors=True)
    return result


def print_table(r: dict[str, Any]) -> None:
    m, b = r["meta"], r["browser"]
    from_browser = b["judgements_stored"] if b else 0
    print(f"{'call':<24}{'requests':>10}{'failures':>10}{'p50 ms':>10}{'p95 ms':>10}{'p99 ms':>10}{'max ms':>10}")
    for name, c in r["calls"].items():
        print(f"{name:<24}{c['requests']:>10}{c['failures']:>10}{c['p50_ms']:>10.0f}{c['p95_ms']:>10.0f}"
              f"{c['p99_ms']:>10.0f}{c['max_ms']:>10.0f}")
    for name, c in r["server"].items():
        print(f"{name + ' (app)':<24}{c['requests']:>10}{'':>10}{c['p50_ms']:>10.0f}{c['p95_ms']:>10.0f}"
              f"{c['p99_ms']:>10.0f}")
    rows: list[tuple[str, object]] = [
        ("database", m["database"]),
        ("crowd", f"{m['users']} users (+{m['spawn_rate']}/s), {m['seconds']} s, reading ~{m['think_median_s']} s, "
                  f"{m['api']} API" + ("; timings once all had started" if m["steady"] else "")),
        ("judgements acknowledged", f"{r['acknowledged']} ({r['judgements_per_s']}/s)"),
        ("judgements stored", f"{r['checks']['judgements']} ({r['checks']['unacknowledged'] - from_browser} never "
                              "acknowledged: replies cut off by the end of the run"
                              + (f"; {from_browser} from the browser)" if b else ")")),
        *[(f"check: {c.replace('_', ' ')}", r["checks"][c]) for c in CHECKS],
        ("checks", "PASS" if r["passed"] else "FAIL"),
    ]
    if b:
        rows.append(("browser: submit -> next task",
                     f"p50 {b['p50_ms']} ms, p95 {b['p95_ms']} ms, max {b['max_ms']} ms over {b['judgements']} "
                     f"judgements (reading ~{b['think_median_s']} s); its request p50 {b['request_p50_ms']} ms, "
                     f"p95 {b['request_p95_ms']} ms"
                     + (f"; stopped: {b['error']}" if b["error"] else "")))
    for f in r["failures"]:
        rows.append((f"failure: {f['name']}", f"{f['occurrences']} x {f['error']}"))
    if r["round"] is not None:
        stages = ", ".join(f"{n} {s['status']} step {s['from']}->{s['to']}/{s['total']}"
                           for n, s in r["round"]["stages"].items())
        rows.append(("round during the run", f"{r['round']['status']}: {stages}"))
        rows.append(("round after the app stopped", r["round"]["after_app_stopped"]))
    load = m["load_average_1m"]
    rows += [("machine", f"{m['machine']['cpus']} x {m['machine']['cpu']}, Python {m['machine']['python']}"),
             ("load average (1 min)", f"mean {load['mean']}, max {load['max']}"
                                      + ("; locust warned its CPU was saturated" if m["locust_cpu_warning"] else "")),
             ("date", m["date"])]
    for key, value in rows:
        print(f"{key:<32}{value}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--database", choices=("sqlite", "postgres"), default="sqlite")
    ap.add_argument("--users", type=int, default=100, help="simulated annotators, one account each")
    ap.add_argument("--spawn-rate", type=float, default=10, help="users started per second")
    length = ap.add_mutually_exclusive_group()
    length.add_argument("--minutes", type=float, default=5, help="how long the crowd runs")
    length.add_argument("--seconds", type=int, help="how long the crowd runs, in seconds (short smoke runs)")
    ap.add_argument("--think-seconds", type=float, default=30, help="median reading time per judgement")
    ap.add_argument("--round-running", action=argparse.BooleanOptionalAction, default=True,
                    help="a round trains in the worker during the run")
    ap.add_argument("--tasks", type=int, help="tasks to seed (default: enough that the queue never runs dry)")
    ap.add_argument("--api", choices=("gradio", "plain"), default="gradio",
                    help="Gradio's endpoints (/gradio_api/run/<name>) or the JSON routes (/api/<name>)")
    ap.add_argument("--browser", action="store_true", help="one more annotator in Chromium, timed submit to next task")
    ap.add_argument("--browser-think-seconds", type=float, default=3, help="the browser annotator's reading time")
    ap.add_argument("--steady", action="store_true",
                    help="count only what happens once every user has started (locust --reset-stats)")
    ap.add_argument("--keep", action="store_true", help="keep the run's folder (database, logs, locust's CSV)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    if importlib.util.find_spec("locust") is None:
        sys.exit("locust is not installed: pip install -e '.[bench]'")
    seconds = args.seconds if args.seconds is not None else round(args.minutes * 60)
    result = run(args.database, args.users, args.spawn_rate, seconds, args.think_seconds, args.round_running,
                 args.tasks, args.keep, args.api, args.browser_think_seconds if args.browser else None,
                 args.steady)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print_table(result)
    ok = result["passed"] and (result["all_calls"] or {}).get("failures", 1) == 0
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
