"""A short run of the locust crowd (bench/crowd_load.py) against `calibra serve` on SQLite: every
acknowledged judgement stored once, no task past its target, no lease left behind; through either
API, and with an annotator in Chromium beside the crowd."""
from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT


def crowd(*extra: str) -> dict:  # type: ignore[type-arg]
    if importlib.util.find_spec("locust") is None:
        pytest.fail("locust is not installed: pip install -e '.[test]'")
    # Without a round the worker idles: 10 annotators reading ~0.5 s for 20 s take about 30 s in all.
    done = subprocess.run([sys.executable, str(ROOT / "bench" / "crowd_load.py"), "--database", "sqlite",
                           "--users", "10", "--spawn-rate", "10", "--seconds", "20", "--think-seconds", "0.5",
                           "--no-round-running", "--json", *extra], capture_output=True, text=True, timeout=240)
    assert done.stdout.strip(), done.stderr[-3000:]
    result = json.loads(done.stdout)
    calls = result["calls"]
    assert result["failures"] == [] and all(c["failures"] == 0 for c in calls.values()), result["failures"]
    assert calls["login"]["requests"] == 10
    assert result["acknowledged"] > 0 and calls["submit"]["requests"] >= result["acknowledged"]
    assert result["checks"]["judgements"] >= result["acknowledged"]
    assert result["passed"], result["checks"]
    # The app logged every call the crowd timed (and perhaps a few cut off by the end of the run),
    # taking no longer over them than the crowd waited: the crowd's own time on top is small.
    for name in ("next_task", "submit"):
        timed = calls[name]["requests"] + calls.get(f"{name} (queue empty)", {"requests": 0})["requests"]
        app = result["server"][name]
        assert 0 <= app["requests"] - timed <= 10, (name, app, calls[name])
        assert app["p50_ms"] <= calls[name]["p50_ms"] * 1.1 + 1, (name, app, calls[name])
    assert done.returncode == 0, done.stderr[-3000:]
    return result


@pytest.mark.slow
@pytest.mark.sqlite  # the crowd runs on its own SQLite database in either pass
@pytest.mark.browser
def test_a_short_crowd_stores_every_acknowledged_judgement_once(env: Path) -> None:
    result = crowd("--browser", "--browser-think-seconds", "0.5")
    # The browser's annotator judged beside the crowd, each of its submits timed and stored.
    b = result["browser"]
    assert b["error"] is None and b["judgements"] >= 3, b
    assert b["judgements_stored"] == b["judgements"]
    assert 0 < b["request_p50_ms"] <= b["p50_ms"] <= b["p95_ms"] <= b["max_ms"]
    # Each stored judgement was either acknowledged to the crowd or made in the browser (or a
    # reply cut off by the end of the run, at most one per simulated annotator).
    assert 0 <= result["checks"]["unacknowledged"] - b["judgements_stored"] <= 10


@pytest.mark.slow
@pytest.mark.sqlite
def test_a_short_crowd_through_the_json_routes(env: Path) -> None:
    result = crowd("--api", "plain")
    assert result["meta"]["api"] == "plain" and result["browser"] is None
