"""Faults on the training side, with real worker processes and real files: a worker killed
(SIGKILL) while it trains or while it writes an artifact, and an artifact's folder that turns
read-only, or a disk that fills up, during a save. Whatever happens, no registered model version
points at a partial or missing artifact, and the next worker run finishes the work."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from safetensors.torch import load_file
from sqlalchemy import select

from db.models import ModelKind, ModelVersion, RoundStatus, StageStatus, TrainingRound
from tests.test_rounds import _tiny_options
from training.judges.scalar_model import MANIFEST as JUDGE_MANIFEST
from training.registry import list_versions
from training.rounds.store import find_round, request_round
from training.slic.trainer import MANIFEST as SLIC_MANIFEST

# `calibra ARGS` with an audit hook that acts the instant the process makes the event EVENT
# (os.mkdir, open for writing, os.rename) on a path containing MARKER: how the tests hit one
# exact moment of a save from outside the product's code. ACTION: kill (SIGKILL, no clean-up)
# or read-only (the folder the path is in stops taking writes before the call goes through).
AT_EVENT = """
import os, runpy, signal, sys

event, marker, action = sys.argv[1:4]


def hook(name, args):
    if name != event or marker not in str(args[0]):
        return
    if name == "open" and not args[2] & (os.O_WRONLY | os.O_RDWR):
        return
    if action == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    os.chmod(os.path.dirname(args[0]), 0o555)


sys.addaudithook(hook)
sys.argv = ["calibra", *sys.argv[4:]]
runpy.run_module("app.cli", run_name="__main__")
"""
WORKER = ["worker", "--once"]


def _worker(*, at: tuple[str, str, str] | None = None, prefix: tuple[str, ...] = ()) -> list[str]:
    """The command of a worker that runs the requested round and exits; `at`: (EVENT, MARKER,
    ACTION) of `AT_EVENT`."""
    if at is None:
        return [*prefix, sys.executable, "-m", "app.cli", *WORKER]
    return [*prefix, sys.executable, "-c", AT_EVENT, *at, *WORKER]


def _run_worker(command: list[str]) -> None:
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]


@pytest.fixture
def models(env: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The workers' own models folder, where they save the judges: not the shared one, so that
    neither the judges nor the faults leave the test."""
    folder = env / "models"
    (folder / "judges").mkdir(parents=True)
    monkeypatch.setenv("CALIBRA_MODELS_DIR", str(folder))
    return folder


def _hidden(folder: Path, prefix: str = ".") -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.name.startswith(prefix)) if folder.exists() else []


def _assert_registered_artifacts_whole(ctx) -> None:  # type: ignore[no-untyped-def]
    """Every model version with an artifact points at a whole one: its manifest (written last)
    is there and its weights load."""
    with ctx.transaction() as db:
        versions = [(v.name, v.kind, Path(v.artifact_path))
                    for v in db.scalars(select(ModelVersion).where(ModelVersion.artifact_path.is_not(None)))]
    for name, kind, folder in versions:
        manifest = SLIC_MANIFEST if kind == ModelKind.POLICY else JUDGE_MANIFEST
        assert (folder / manifest).is_file(), f"{name} points at {folder}, which has no {manifest}"
        weights = list(folder.glob("*.safetensors"))
        assert weights, f"{name} points at {folder}, which has no weights"
        for path in weights:
            assert load_file(path), path


def _wait_for_steps(ctx, number: int, stage: str, steps: int, process: subprocess.Popen[bytes]) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and process.poll() is None:
        with ctx.transaction() as db:
            row = next((s for s in find_round(db, number).stages if s.name == stage), None)
            if row is not None and (row.progress or {}).get("step", 0) >= steps:
                return
        time.sleep(0.1)
    pytest.fail(f"the worker did not reach step {steps} of {stage} (exit status {process.poll()})")


@pytest.mark.parametrize("moment", ["training", "writing", "renaming"])
def test_a_worker_killed_mid_round_leaves_no_half_model(loop_ready, env: Path, models: Path,  # type: ignore[no-untyped-def]
                                                         tiny_encoder: Path, moment: str) -> None:
    """Killed while it trains round 0's SFT adapter, after it wrote part of the adapter into its
    temporary folder, or with the adapter written and not yet renamed into place: nothing is
    registered, and the next worker resumes the round, saves the adapter whole and removes what
    the killed one left."""
    ctx = loop_ready
    slic = {"lora_r": 4, "batch_size": 2, "learning_rate": 1e-3, "max_target_tokens": 16, "max_prompt_tokens": 64}
    if moment == "training":  # long enough to be killed mid-way, after a checkpoint
        slic |= {"epochs": 60, "checkpoint_every": 20}
    with ctx.transaction() as db:
        number = request_round(db, _tiny_options(tiny_encoder, slic_settings=slic), "test").number
        before = list_versions(db)
    folder = env / "home" / "rounds" / f"loop-{number}" / "sft"
    marker = "/.adapter.tmp-"
    if moment == "training":
        worker = subprocess.Popen(_worker(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            _wait_for_steps(ctx, number, "sft", 30, worker)
        finally:
            worker.send_signal(signal.SIGKILL)
            worker.wait()
    else:
        event = "open" if moment == "writing" else "os.rename"
        worker = subprocess.Popen(_worker(at=(event, marker, "kill")), stdout=subprocess.DEVNULL,
                                  stderr=subprocess.PIPE, text=True)
        _, err = worker.communicate(timeout=600)
        assert worker.returncode == -signal.SIGKILL, err[-3000:]  # killed at the save, not failed before it

    with ctx.transaction() as db:
        assert find_round(db, number).status == RoundStatus.RUNNING  # as the killed worker left it
        assert list_versions(db) == before  # nothing registered
    assert not (folder / "adapter").exists()
    left = _hidden(folder, marker[1:])
    if moment == "training":
        assert left == []
    else:  # the killed worker's temporary folder: its adapter without (writing) or with its manifest
        (tmp,) = left
        assert f":{worker.pid}-" in tmp.name
        assert (tmp / SLIC_MANIFEST).exists() is (moment == "renaming")
    _assert_registered_artifacts_whole(ctx)

    _run_worker(_worker())
    with ctx.transaction() as db:
        done = find_round(db, number)
        assert done.status == RoundStatus.SUCCEEDED and done.attempts == 2, done.reason
        version = db.scalar(select(ModelVersion).where(ModelVersion.name == "policy-sft"))
        assert version is not None and Path(version.artifact_path) == folder / "adapter"
    _assert_registered_artifacts_whole(ctx)
    assert _hidden(folder) == []  # no temporary folder or checkpoint is left behind


@pytest.fixture
def round_one(loop_ready, judged):  # type: ignore[no-untyped-def]
    """Round 0 done, and 36 judgements for round 1's judges to learn from."""
    with judged.transaction() as db:
        db.add(TrainingRound(number=0, status=RoundStatus.SUCCEEDED, options={}, requested_by="test"))
    return judged


@contextmanager
def _full_disk(folder: Path) -> Iterator[None]:
    """`folder` on a file system of its own of 1 MiB, too small for a judge's weights (4 MB)."""
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(folder)], capture_output=True,
                             text=True)
    if mounted.returncode != 0:
        pytest.skip(f"a full disk here is a small tmpfs, and mounting one needs root: {mounted.stderr.strip()}")
    try:
        yield
    finally:
        subprocess.run(["umount", str(folder)], check=True)


@contextmanager
def _read_only(folder: Path) -> Iterator[tuple[str, ...]]:
    """The command prefix under which `folder`'s permissions hold, restored after: root ignores
    them unless it gives up CAP_DAC_OVERRIDE, as `setpriv` does for the command it starts."""
    try:
        yield ("setpriv", "--inh-caps=-dac_override", "--bounding-set=-dac_override") if os.geteuid() == 0 else ()
    finally:
        folder.chmod(0o755)


def _stage(round_: TrainingRound, name: str) -> dict[str, Any]:
    stage = next(s for s in round_.stages if s.name == name)
    return {"status": stage.status, "error": stage.error}


@pytest.mark.parametrize(("fault", "cause"), [("read-only", "Permission denied"),
                                              ("disk full", "No space left on device")])
def test_a_save_that_cannot_be_written_fails_the_round_and_changes_nothing(  # type: ignore[no-untyped-def]
        round_one, models: Path, tiny_encoder: Path, fault: str, cause: str) -> None:
    """Round 1's reward model cannot be saved: the models folder turns read-only as the save
    starts, or the disk fills up while it writes. The round fails with an error that names the
    folder and the cause; the registry is as it was and nothing is left at the destination. Once
    the fault is gone, the next round learns from the same judgements and succeeds."""
    ctx = round_one
    judges = models / "judges"
    dest = judges / "reward-r1"
    options = _tiny_options(tiny_encoder, docs=4)
    with ctx.transaction() as db:
        request_round(db, options, "test")
        before = list_versions(db)
    if fault == "read-only":
        with _read_only(judges) as prefix:
            _run_worker(_worker(at=("os.mkdir", f"/.{dest.name}.tmp-", "read-only"), prefix=prefix))
    else:
        with _full_disk(judges):
            _run_worker(_worker())
    with ctx.transaction() as db:
        failed = find_round(db, 1)
        stage = _stage(failed, "judges")
        assert failed.status == RoundStatus.FAILED and stage["status"] == StageStatus.FAILED, failed.reason
        assert f"could not save {dest}: " in stage["error"] and cause in stage["error"], stage["error"]
        assert cause in (failed.reason or "")
        assert list_versions(db) == before  # the same versions, the same active ones
        snapshot = failed.snapshot
    assert _hidden(judges, f".{dest.name}.") == [] and not dest.exists()

    with ctx.transaction() as db:
        request_round(db, options, "test")
    _run_worker(_worker())
    with ctx.transaction() as db:
        done = find_round(db, 2)
        assert done.status == RoundStatus.SUCCEEDED, done.reason
        assert snapshot is not None and done.snapshot is not None
        assert (done.snapshot["judgement_id_min"], done.snapshot["judgement_id_max"]) == (
            snapshot["judgement_id_min"], snapshot["judgement_id_max"])  # what round 1 could not learn
        assert _stage(done, "judges")["status"] == StageStatus.DONE
    _assert_registered_artifacts_whole(ctx)
