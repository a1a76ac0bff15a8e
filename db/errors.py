"""What a database error means for the caller, whichever backend raised it."""
from __future__ import annotations

from sqlalchemy.exc import OperationalError


def is_busy(exc: BaseException) -> bool:
    """True when the database was too busy to answer in time and rolled back: SQLite's
    "database is locked" after its busy timeout; PostgreSQL's lock timeouts and serialisation
    failures. Trying again later is the remedy; nothing was stored."""
    if not isinstance(exc, OperationalError):
        return False
    text = str(exc.orig).lower()
    return any(word in text for word in ("locked", "busy", "lock timeout", "could not serialize"))
