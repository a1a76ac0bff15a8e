"""`calibra db backup|restore`: a copy of the whole database, taken while the app runs, and put back."""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer

from app.cli_support import CliError, reports_errors
from app.config import load_settings
from db.backup import BackupError, backup, describe, restore

db_cli = typer.Typer(help="Backups of the database: take one, restore one.", no_args_is_help=True)


@contextmanager
def _reported() -> Iterator[None]:
    try:
        yield
    except BackupError as exc:
        raise CliError(str(exc)) from None


@db_cli.command("backup")
@reports_errors
def db_backup(path: Annotated[Path, typer.Argument(help="the backup file to write (replaced if it exists)")]) -> None:
    """Back up the database while the app keeps running: SQLite to a database file, PostgreSQL to
    a pg_dump archive (custom format). A failed backup leaves no file behind.

    Example: calibra db backup backups/calibra-2026-12-01.db
    """
    url = load_settings().database_url
    with _reported():
        backup(url, path)
    typer.echo(f"backed up {describe(url)} to {path}")


@db_cli.command("restore")
@reports_errors
def db_restore(
    path: Annotated[Path, typer.Argument(help="a file written by `calibra db backup`")],
    yes: Annotated[bool, typer.Option("--yes", help="do not ask for confirmation")] = False,
) -> None:
    """Replace everything in the database with a backup from `calibra db backup`. A file that is
    not a whole backup of a Calibra database is refused and nothing changes. Restart the app
    afterwards, so it upgrades a backup of an older schema.

    Example: calibra db restore backups/calibra-2026-12-01.db --yes
    """
    url = load_settings().database_url
    if not yes:
        typer.confirm(f"replace everything in {describe(url)} with {path}?", abort=True)
    with _reported():
        restore(url, path)
    typer.echo(f"restored {describe(url)} from {path}")


def register(cli: typer.Typer) -> None:
    cli.add_typer(db_cli, name="db")
