"""Backups of the database, taken while the app runs, and restores from them.

SQLite: the online backup API copies one consistent snapshot while annotators go on writing, into
a single self-contained file. A restore copies a checked backup into the live database through the
same API: SQLite then tells every other connection that the database changed, where copying a file
over a database in WAL mode would corrupt it.

PostgreSQL: `pg_dump --format=custom`, put back by `pg_restore --clean --if-exists` in a single
transaction, so a restore that fails half-way changes nothing.

A backup is written beside its destination under a temporary name and renamed into place: a
failed one leaves the previous backup (or nothing), never half a file.
"""
from __future__ import annotations

import os
import re
import sqlite3
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path

from sqlalchemy.engine import URL, make_url

from db.engine import BUSY_TIMEOUT_S
from db.local_postgres import PostgresMissing, pg_tool


class BackupError(Exception):
    """A backup or restore that could not be done; the database is as it was."""


def describe(url: str) -> str:
    """The database a URL names, without its password: for messages."""
    return make_url(url).render_as_string(hide_password=True)


def backup(url: str, dest: Path) -> None:
    """Write a backup of the database at `url` to the file `dest` (replacing it)."""
    parsed = make_url(url)
    try:
        with _replacing(dest) as tmp:
            if parsed.get_backend_name() == "sqlite":
                _sqlite_backup(_sqlite_file(parsed), tmp)
            else:
                _run_pg_tool("pg_dump", "--format=custom", f"--file={tmp}", f"--dbname={_libpq_uri(parsed)}",
                             password=parsed.password)
    except (OSError, sqlite3.Error) as exc:  # an unwritable folder, a full disk, an unreadable database
        raise BackupError(f"could not back up to {dest}: {exc}") from None


def restore(url: str, source: Path) -> None:
    """Replace the whole content of the database at `url` with the backup `source`, once the
    backup is known to be a whole Calibra database; otherwise raise `BackupError` and change nothing."""
    if not source.is_file():
        raise BackupError(f"{source}: no such file")
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        _check_sqlite_backup(source)
        _sqlite_restore(source, _sqlite_file(parsed))
    else:
        _check_pg_backup(source)
        _run_pg_tool("pg_restore", "--clean", "--if-exists", "--no-owner", "--single-transaction",
                     f"--dbname={_libpq_uri(parsed)}", str(source), password=parsed.password)


# --- SQLite ------------------------------------------------------------------------------------

def _sqlite_file(url: URL) -> Path:
    if not url.database or url.database == ":memory:":
        raise BackupError("an in-memory database has nothing to back up or restore")
    return Path(url.database)


def _connect(path: Path, *, read_only: bool = False) -> sqlite3.Connection:
    uri = path.absolute().as_uri() + ("?mode=ro" if read_only else "")
    return sqlite3.connect(uri, uri=True, timeout=BUSY_TIMEOUT_S)


def _sqlite_backup(database: Path, dest: Path) -> None:
    if not database.is_file():
        raise BackupError(f"there is no database at {database}")
    with closing(_connect(database, read_only=True)) as src, closing(_connect(dest)) as dst:
        src.backup(dst)
        # Out of WAL mode: the backup is one file, complete without a -wal beside it.
        dst.execute("PRAGMA journal_mode=DELETE")


def _check_sqlite_backup(source: Path) -> None:
    try:
        with closing(_connect(source, read_only=True)) as conn:
            if conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'alembic_version'"
                            ).fetchone() is None:
                raise BackupError(f"{source} is not a Calibra database (it has no alembic_version table)")
            problems = [row[0] for row in conn.execute("PRAGMA quick_check")]
    except sqlite3.DatabaseError as exc:
        raise BackupError(f"{source} is not a SQLite database ({exc})") from None
    if problems != ["ok"]:
        raise BackupError(f"{source} is damaged: {'; '.join(problems[:3])}")


def _sqlite_restore(source: Path, database: Path) -> None:
    try:
        database.parent.mkdir(parents=True, exist_ok=True)
        with closing(_connect(source, read_only=True)) as src, closing(_connect(database)) as dst:
            src.backup(dst)  # one transaction on the destination: a failed copy is rolled back
    except (OSError, sqlite3.Error) as exc:
        raise BackupError(f"could not restore {database} from {source}: {exc}") from None


# --- PostgreSQL --------------------------------------------------------------------------------

def _libpq_uri(url: URL) -> str:
    """The URL as libpq reads it; the password goes through the environment, not the command line."""
    return url.set(drivername="postgresql", password=None).render_as_string(hide_password=False)


def _pg_tool(name: str) -> str:
    try:
        return pg_tool(name)
    except PostgresMissing as exc:
        raise BackupError(str(exc)) from None


def _run_pg_tool(name: str, *args: str, password: str | None = None) -> str:
    env = {**os.environ, **({"PGPASSWORD": password} if password else {})}
    done = subprocess.run([_pg_tool(name), *args], env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise BackupError(f"{name} failed: {done.stderr.strip()}")
    return done.stdout


def _check_pg_backup(source: Path) -> None:
    try:
        listing = _run_pg_tool("pg_restore", "--list", str(source))
    except BackupError as exc:
        raise BackupError(f"{source} is not a pg_dump archive ({exc})") from None
    if not re.search(r"^\d+; \d+ \d+ TABLE \S+ alembic_version ", listing, re.MULTILINE):
        raise BackupError(f"{source} is not a backup of a Calibra database (it has no alembic_version table)")


# --- both --------------------------------------------------------------------------------------

@contextmanager
def _replacing(dest: Path) -> Iterator[Path]:
    """A temporary file beside `dest`, renamed over it on success and removed on any error."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{dest.name}.tmp-", dir=dest.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
