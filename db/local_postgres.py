"""PostgreSQL's programs on this machine, and a throw-away server on loopback built from them: what
the tests and the benchmarks run Calibra on, and a quick way to try Calibra on PostgreSQL."""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

PG_BINARIES = Path("/usr/lib/postgresql")  # Debian's layout: one <version>/bin per installed server


class PostgresMissing(RuntimeError):
    pass


def pg_tool(name: str) -> str:
    """The path of a PostgreSQL program (`initdb`, `pg_dump`, ...): the newest installed version's,
    which reads every older server, or the one on PATH."""
    installed = [p for p in PG_BINARIES.glob(f"*/bin/{name}") if p.parent.parent.name.isdigit()]
    if installed:
        return str(max(installed, key=lambda p: int(p.parent.parent.name)))
    found = shutil.which(name)
    if found is None:
        raise PostgresMissing(f"{name} was not found in {PG_BINARIES}/*/bin or on PATH: install PostgreSQL "
                              "(Debian: sudo apt-get install -y postgresql)")
    return found


def free_port() -> int:
    """A free TCP port on loopback, for the server here and for anything else started locally."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def throwaway_server(*, fsync: bool = True) -> Iterator[str]:
    """A new PostgreSQL server in a temporary folder, listening on loopback only, with trust
    authentication for the user `calibra`; yields the SQLAlchemy URL of its `postgres` database and
    removes everything afterwards. `fsync=False` trades durability for speed (tests)."""
    initdb, pg_ctl = pg_tool("initdb"), pg_tool("pg_ctl")
    # Not under a folder private to root: the server runs as `postgres` when we are root.
    base = Path(tempfile.mkdtemp(prefix="calibra-pg-"))
    data, sock = base / "data", base / "sock"
    sock.mkdir()
    as_user: list[str] = []
    if os.geteuid() == 0:  # initdb refuses to run as root
        shutil.chown(base, "postgres")
        shutil.chown(sock, "postgres")
        as_user = ["runuser", "-u", "postgres", "--"]
    port = free_port()
    options = f"-p {port} -k {sock} -c listen_addresses=127.0.0.1" + ("" if fsync else " -c fsync=off")
    try:
        for cmd in ([initdb, "-D", str(data), "-U", "calibra", "-A", "trust"],
                    [pg_ctl, "-D", str(data), "-l", str(base / "log"), "-w", "-o", options, "start"]):
            done = subprocess.run([*as_user, *cmd], capture_output=True, text=True)
            if done.returncode != 0:
                raise PostgresMissing(f"{Path(cmd[0]).name} failed: {done.stdout}{done.stderr}")
        yield f"postgresql+psycopg://calibra@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run([*as_user, pg_ctl, "-D", str(data), "-m", "immediate", "stop"], capture_output=True)
        shutil.rmtree(base, ignore_errors=True)
