"""Model artifacts written whole or not at all.

A trainer writes into a hidden temporary folder beside the destination and renames it into
place when everything is saved: a crash, an interruption or a full disk leaves the previous
artifact (or nothing) at the destination, never half a model that a later round would load.
The temporary folder is named after the process writing it (HOST:PID), so that the next save
of the same artifact removes what a process killed mid-save left behind, and only that.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from training.errors import ArtifactError


def this_process() -> str:
    """This process as HOST:PID: what a round's worker goes by, and part of the name of the
    temporary folders it saves into."""
    return f"{socket.gethostname()}:{os.getpid()}"


def ended(process: str) -> bool:
    """Whether `process` (HOST:PID) is a process of this machine, other than this one, that has
    ended: what it left half-done is nobody's any more. A process of another machine sharing the
    folder cannot be checked, and counts as running."""
    host, _, pid = process.rpartition(":")
    if host != socket.gethostname() or not pid.isdigit() or int(pid) == os.getpid():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # someone else's process
        return False
    return False


def _remove_leftovers(dest: Path) -> None:
    """The temporary (and replaced) folders of `dest` whose writer ended before it could rename
    or remove them: killed mid-save, they would otherwise stay, a model's size each, forever."""
    for path in dest.parent.iterdir():
        for prefix in (f".{dest.name}.tmp-", f".{dest.name}.old-"):  # then HOST:PID-RANDOM
            if path.name.startswith(prefix) and ended(path.name.removeprefix(prefix).rpartition("-")[0]):
                shutil.rmtree(path, ignore_errors=True)


@contextmanager
def atomic_dir(dest: Path) -> Iterator[Path]:
    """Yield an empty folder; on success it replaces `dest`, on error it is removed and the
    error is raised again as an `ArtifactError` that names `dest`."""
    dest = Path(dest)
    tmp: Path | None = None
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        _remove_leftovers(dest)
        prefix = f".{dest.name}.tmp-"
        tmp = Path(tempfile.mkdtemp(prefix=f"{prefix}{this_process()}-", dir=dest.parent))
        yield tmp
        old = None
        if dest.exists():
            old = dest.with_name(f".{dest.name}.old-{tmp.name.removeprefix(prefix)}")
            os.replace(dest, old)
        os.replace(tmp, dest)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except Exception as exc:
        raise ArtifactError(f"could not save {dest}: {exc}") from exc
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)


def write_json(path: Path, payload: dict[str, Any]) -> None:
    """A JSON file written through a temporary name, so readers never see it half-written."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(payload, indent=2, default=str))
    os.replace(tmp, path)


def fingerprint(rows: list[tuple[str, ...]]) -> str:
    """A hash of the training data, stored with the model version that learned from it."""
    h = hashlib.sha256()
    for row in sorted(rows):
        h.update("\x1f".join(row).encode())
        h.update(b"\x1e")
    return h.hexdigest()[:16]
