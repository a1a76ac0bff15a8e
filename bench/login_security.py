"""What a login costs the rest of the app, and what its timing tells an attacker.

Starts the app on loopback in a temporary home and measures, over HTTP:
- wrong passwords for an existing and an unknown account (interleaved, so a busy moment hits
  both), and an over-long password for each: reply and time;
- an annotator's `next_task` while nothing else happens, and while 12 wrong logins are checked
  at once (each is one bcrypt check, a quarter of a second of CPU by design).

    .venv/bin/python bench/login_security.py [--json]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx

from annotate.users import add_user
from app.config import load_settings
from app.context import open_context
from app.web import launch
from db.local_postgres import free_port
from db.models import Role

PASSWORD = "bench-pass-1"


def _login(url: str, name: str, password: str = "wrong password") -> tuple[float, int, str]:
    t0 = time.perf_counter()
    reply = httpx.post(f"{url}login", data={"username": name, "password": password}, timeout=60)
    return time.perf_counter() - t0, reply.status_code, reply.text


def _next_task(client: httpx.Client) -> float:
    t0 = time.perf_counter()
    client.post("/gradio_api/run/next_task", json={"data": []}).raise_for_status()
    return time.perf_counter() - t0


def measure(url: str) -> dict[str, object]:
    known, unknown = [], []
    for i, name in enumerate(["known0", "known1", "known2"] * 2):
        known.append(_login(url, name))
        unknown.append(_login(url, f"nobody{i}"))
    long_known, long_unknown = _login(url, "known0", "ü" * 40), _login(url, "nobody-long", "ü" * 40)
    with httpx.Client(base_url=url, timeout=60) as client:
        client.post("/login", data={"username": "reader", "password": PASSWORD}).raise_for_status()
        calm = [_next_task(client) for _ in range(20)]
        storm = [threading.Thread(target=_login, args=(url, f"stranger{i}")) for i in range(12)]
        busy: list[float] = []
        for t in storm:
            t.start()
        while any(t.is_alive() for t in storm):
            busy.append(_next_task(client))
        for t in storm:
            t.join()
    return {
        "wrong_password_s": {"known": statistics.median(t for t, _, _ in known),
                             "unknown": statistics.median(t for t, _, _ in unknown)},
        "over_72_bytes_s": {"known": long_known[0], "unknown": long_unknown[0]},
        "replies": sorted({f"{code} {body}" for _, code, body in [*known, *unknown, long_known, long_unknown]}),
        "next_task_ms": {"calm_p50": 1000 * statistics.median(calm), "calm_max": 1000 * max(calm),
                         "during_12_bad_logins_p50": 1000 * statistics.median(busy),
                         "during_12_bad_logins_max": 1000 * max(busy), "calls_during": len(busy)},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as home:
        os.environ["CALIBRA_HOME"] = home
        os.environ.setdefault("CALIBRA_MODELS_DIR", str(Path(__file__).resolve().parents[1] / ".calibra" / "models"))
        ctx = open_context(load_settings())
        with ctx.transaction() as db:
            for name in ("known0", "known1", "known2", "reader"):
                add_user(db, name, Role.ANNOTATOR, PASSWORD)
        port = free_port()
        server = launch(ctx, "127.0.0.1", port, block=False)
        try:
            result = measure(f"http://127.0.0.1:{port}/")
        finally:
            server.close()
    cpu = platform.processor() or platform.machine()
    result["machine"] = f"{cpu}, {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}"
    result["date"] = datetime.now(UTC).isoformat(timespec="minutes")
    if args.json:
        print(json.dumps(result, indent=2))
        return
    w, o, n = result["wrong_password_s"], result["over_72_bytes_s"], result["next_task_ms"]
    assert isinstance(w, dict) and isinstance(o, dict) and isinstance(n, dict)
    print(f"wrong password: known account {w['known']:.3f} s, unknown {w['unknown']:.3f} s (medians of 6)")
    print(f"80-byte password: known account {o['known']:.3f} s, unknown {o['unknown']:.3f} s")
    print(f"replies: {result['replies']}")
    print(f"next_task: calm p50 {n['calm_p50']:.1f} ms (max {n['calm_max']:.1f}); during 12 wrong logins "
          f"p50 {n['during_12_bad_logins_p50']:.1f} ms, max {n['during_12_bad_logins_max']:.1f} ms "
          f"over {n['calls_during']} calls")
    print(f"{result['machine']}; {result['date']}")


if __name__ == "__main__":
    main()
