"""A locust crowd of annotators for the annotation API, on loopback only.

Each simulated annotator logs in with its own account (`POST /login`), then loops: `next_task`
-> reads the post and its summaries for a human-like time -> `submit` (the app's
`POST /gradio_api/run/<name>` endpoints, the ones `gradio_client` calls, with a `session_hash` per
annotator as gradio_client sends, or with CROWD_API=plain
the JSON routes `POST /api/<name>`). Locust reports each call
under its own name (`login`, `next_task`, `submit`), so its statistics give p50/p95/p99 per call;
with `--csv PREFIX` the final ones are also written to PREFIX_final_stats.csv and
PREFIX_final_failures.csv when locust quits.

Set by the environment (`bench/crowd_load.py` sets them all):
- CROWD_ACCOUNTS: the account names, comma-separated, handed out one per simulated user;
- CROWD_PASSWORD: their password;
- CROWD_THINK_S: the median reading time per judgement in seconds (default 30; log-normal, so
  most judgements take between half and twice that, a few much longer);
- CROWD_API: `gradio` (default) or `plain`, which endpoints the crowd calls;
- CROWD_ACK_DIR: a folder where each locust process appends the assignment id of every submit the
  app acknowledged with {"stored": true} to `acks-<pid>.txt`, one per line, for the check of the
  database afterwards.

Run it through `bench/crowd_load.py`, or by hand against a running app:

    CROWD_ACCOUNTS=load0,load1 CROWD_PASSWORD=... CROWD_ACK_DIR=/tmp/acks CROWD_THINK_S=1 \\
        .venv/bin/locust -f bench/locustfile.py --headless -u 2 -r 2 -t 30s --host http://127.0.0.1:7860
"""
from __future__ import annotations

import csv
import ipaddress
import math
import os
import random
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import urlsplit

import gevent
from locust import HttpUser, constant, events, task
from locust.env import Environment
from locust.exception import StopUser
from locust.stats import PERCENTILES_TO_REPORT, StatsCSV

STRENGTHS = ("significantly", "better", "slightly", "negligibly")
SUBMIT_FIELDS = ("assignment_id", "best", "quality", "factual", "strength", "all_unacceptable", "comment")
THINK_SIGMA = 0.5  # log-normal spread of reading times: 90% of judgements within 0.44x-2.3x the median

# One process hands out the names in order. Several locust processes (--processes, workers) would
# each start at the top of the list, so the crowd runs in one: 100 annotators reading for tens of
# seconds are a few requests per second, well within one gevent loop.
_accounts = iter([n for n in os.environ.get("CROWD_ACCOUNTS", "").split(",") if n])
_acks: TextIO | None = None


def is_loopback(host: str | None) -> bool:
    name = urlsplit(host or "").hostname
    if name == "localhost":
        return True
    try:
        return name is not None and ipaddress.ip_address(name).is_loopback
    except ValueError:  # any other host name may resolve anywhere
        return False


@events.init.add_listener
def _on_init(environment: Environment, **_: Any) -> None:
    global _acks
    # A load test aimed at a real deployment would lease its tasks to robots: this one stays on
    # this machine.
    if not is_loopback(environment.host):
        raise SystemExit(f"refusing --host {environment.host!r}: the crowd runs against 127.0.0.1 or localhost only")
    folder = Path(os.environ["CROWD_ACK_DIR"])
    folder.mkdir(parents=True, exist_ok=True)
    # Line-buffered: a run cut off by its time limit keeps every line written.
    _acks = open(folder / f"acks-{os.getpid()}.txt", "a", buffering=1)


@events.quitting.add_listener
def _on_quitting(environment: Environment, **_: Any) -> None:
    if _acks is not None:
        _acks.close()
    # Locust rewrites its --csv files once a second while the run goes on, and not again once the
    # time limit has stopped the users: the last second's requests would be missing from them. By
    # now every user has stopped, so these are the run's final figures, in the same layout.
    prefix = getattr(environment.parsed_options, "csv_prefix", None)
    if prefix:
        stats = StatsCSV(environment, PERCENTILES_TO_REPORT)
        with open(f"{prefix}_final_stats.csv", "w", newline="") as f:
            stats.requests_csv(csv.writer(f))
        with open(f"{prefix}_final_failures.csv", "w", newline="") as f:
            stats.failures_csv(csv.writer(f))


class Annotator(HttpUser):
    wait_time = constant(0)  # the pause is the reading inside `judge`, between next_task and submit

    def on_start(self) -> None:
        self.name = next(_accounts, None)
        if self.name is None:
            raise StopUser()  # more users than accounts: locust's log says so
        median = float(os.environ.get("CROWD_THINK_S", "30"))
        self.mu = math.log(median)
        self.rng = random.Random(self.name)
        with self.client.post("/login", data={"username": self.name, "password": os.environ["CROWD_PASSWORD"]},
                              name="login", catch_response=True) as reply:
            if reply.status_code != 200:
                reply.failure(f"login {reply.status_code}: {reply.text[:200]}")
                raise StopUser()

    def _call(self, name: str, *args: object) -> Any:
        """The endpoint's answer, or None after recording the failure (HTTP status, the app's
        error message, or a reply that is not the expected JSON)."""
        plain = os.environ.get("CROWD_API", "gradio") == "plain"
        path, payload = ((f"/api/{name}", dict(zip(SUBMIT_FIELDS, args, strict=False))) if plain
                         else (f"/gradio_api/run/{name}", {"data": list(args), "session_hash": self.name}))
        with self.client.post(path, json=payload, name=name, catch_response=True) as reply:
            try:
                body = reply.json()
            except ValueError:
                body = None
            answered = isinstance(body, dict) and reply.status_code == 200 and (plain or body.get("data"))
            if not answered:
                detail = (body.get("detail") or body.get("error")) if isinstance(body, dict) else reply.text[:200]
                reply.failure(f"{name} {reply.status_code}: {detail}")
                return None
            assert isinstance(body, dict)
            return body if plain else body["data"][0]

    def _read(self) -> None:
        gevent.sleep(self.rng.lognormvariate(self.mu, THINK_SIGMA))

    @task
    def judge(self) -> None:
        out = self._call("next_task")
        if out is None:
            self._read()  # a person would look again after a while, not hammer the app
            return
        shown = out.get("task")
        if shown is None:
            # Not the app's fault, but the run measures nothing more for this annotator.
            events.request.fire(request_type="POST", name="next_task (queue empty)", response_time=0,
                                response_length=0, exception=RuntimeError("the queue ran dry: seed more tasks"),
                                context={})
            self._read()
            return
        letters = [s["letter"] for s in shown["summaries"]]
        self._read()
        rng = self.rng
        reply = self._call("submit", shown["assignment_id"], rng.choice(letters),
                           {c: rng.randint(1, 7) for c in letters}, {c: rng.random() < 0.8 for c in letters},
                           rng.choice(STRENGTHS), False, "clear enough" if rng.random() < 0.1 else None)
        if reply is not None and reply.get("stored") is True and _acks is not None:
            _acks.write(f"{shown['assignment_id']}\n")
