"""A short run of the locust crowd (bench/crowd_load.py) against `calibra serve` on SQLite: every
acknowledged judgement stored once, no task past its target, no lease left behind."""
from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT


@pytest.mark.slow
def test_a_short_crowd_stores_every_acknowledged_judgement_once(env: Path) -> None:
    if importlib.util.find_spec("locust") is None:
        pytest.fail("locust is not installed: pip install -e '.[test]'")
    # Without a round the worker idles: 10 annotators reading ~0.5 s for 20 s take about 30 s in all.
    done = subprocess.run([sys.executable, str(ROOT / "bench" / "crowd_load.py"), "--database", "sqlite",
                           "--users", "10", "--spawn-rate", "10", "--seconds", "20", "--think-seconds", "0.5",
                           "--no-round-running", "--json"], capture_output=True, text=True, timeout=240)
    assert done.stdout.strip(), done.stderr[-3000:]
    result = json.loads(done.stdout)
    calls = result["calls"]
    assert result["failures"] == [] and all(c["failures"] == 0 for c in calls.values()), result["failures"]
    assert calls["login"]["requests"] == 10
    assert result["acknowledged"] > 0 and calls["submit"]["requests"] >= result["acknowledged"]
    assert result["checks"]["judgements"] >= result["acknowledged"]
    assert result["passed"], result["checks"]
    assert done.returncode == 0, done.stderr[-3000:]
