"""Model artifacts written whole or not at all.

A trainer writes into a hidden temporary folder beside the destination and renames it into
place when everything is saved: a crash, an interruption or a full disk leaves the previous
artifact (or nothing) at the destination, never half a model that a later round would load.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


@contextmanager
def atomic_dir(dest: Path) -> Iterator[Path]:
    """Yield an empty folder; on success it replaces `dest`, on error it is removed."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.tmp-", dir=dest.parent))
    try:
        yield tmp
        old = None
        if dest.exists():
            old = dest.with_name(f".{dest.name}.old-{os.getpid()}")
            os.replace(dest, old)
        os.replace(tmp, dest)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
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
