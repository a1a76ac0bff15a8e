"""Accounts: creation with a bcrypt password hash, deactivation, new passwords."""
from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import bcrypt
from sqlalchemy import select
from sqlalchemy.orm import Session

from annotate.errors import InvalidInput, NotFound
from annotate.gold import gold_scores
from annotate.sessions import BCRYPT_MAX_BYTES, check_password, end_sessions_of
from db.models import Rater, Role


def _password_hash(password: str) -> str:
    if len(password) < 8:
        raise InvalidInput("must have at least 8 characters", field="password")
    if len(password.encode()) > BCRYPT_MAX_BYTES:  # bcrypt would ignore the rest
        raise InvalidInput(f"must be at most {BCRYPT_MAX_BYTES} bytes", field="password")
    return bcrypt.hashpw(password.encode(), bcrypt.gensalt()).decode()


def add_user(db: Session, name: str, role: Role, password: str) -> Rater:
    name = name.strip()
    if not name:
        raise InvalidInput("is empty", field="name")
    if len(name) > 128 or any(not ch.isprintable() for ch in name):
        raise InvalidInput("must be at most 128 printable characters", field="name")
    if db.scalar(select(Rater.id).where(Rater.name == name)) is not None:
        raise InvalidInput(f"a user named {name!r} already exists", field="name")
    rater = Rater(name=name, role=role, active=True, password_hash=_password_hash(password))
    db.add(rater)
    db.flush()
    return rater


def ensure_users(db: Session, accounts: dict[str, Role], password: str) -> list[str]:
    """Create the accounts that do not exist yet (the demo logins); the names added."""
    added = []
    for name, role in accounts.items():
        if db.scalar(select(Rater.id).where(Rater.name == name)) is None:
            add_user(db, name, role, password)
            added.append(name)
    return added


def list_accounts(db: Session) -> list[dict[str, Any]]:
    """Accounts that can log in, with each one's accuracy on gold tasks."""
    gold = {g.rater: g for g in gold_scores(db)}
    return [{"name": r.name, "role": r.role.value, "active": r.active,
             "gold_judged": gold[r.name].judged if r.name in gold else 0,
             "gold_accuracy": gold[r.name].accuracy if r.name in gold else None}
            for r in db.scalars(select(Rater).where(Rater.password_hash.is_not(None)).order_by(Rater.name))]


def active_rater(db: Session, name: str) -> Rater | None:
    """The active account with this name, or None."""
    return db.scalar(select(Rater).where(Rater.name == name, Rater.active.is_(True)))


def _account(db: Session, name: str) -> Rater:
    rater = db.scalar(select(Rater).where(Rater.name == name, Rater.password_hash.is_not(None)))
    if rater is None:
        raise NotFound(f"no account named {name!r}")
    return rater


def deactivate(db: Session, name: str) -> int:
    """The account can no longer log in, and its open sessions stop working now; the number
    of sessions ended. Its judgements stay."""
    rater = _account(db, name)
    rater.active = False
    return end_sessions_of(db, rater)


def set_password(db: Session, name: str, password: str) -> int:
    """A new password; every open session of the account ends (the number ended)."""
    rater = _account(db, name)
    rater.password_hash = _password_hash(password)
    return end_sessions_of(db, rater)


def still_on_password(db: Session, names: Iterable[str], password: str) -> list[str]:
    """Which of these active accounts still log in with this password (the demo's, say)."""
    rows = db.execute(select(Rater.name, Rater.password_hash)
                      .where(Rater.name.in_(list(names)), Rater.active.is_(True), Rater.password_hash.is_not(None)))
    return sorted(name for name, hashed in rows if check_password(hashed, password))
