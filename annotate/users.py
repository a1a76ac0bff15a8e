"""Raters: creation with a bcrypt password hash, and login checks."""
from __future__ import annotations

from typing import Any

import bcrypt
from sqlalchemy import select
from sqlalchemy.orm import Session

from annotate.errors import InvalidInput
from annotate.gold import gold_scores
from db.models import Rater, Role


def add_user(db: Session, name: str, role: Role, password: str) -> Rater:
    name = name.strip()
    if not name:
        raise InvalidInput("is empty", field="name")
    if len(password) < 8:
        raise InvalidInput("must have at least 8 characters", field="password")
    if db.scalar(select(Rater.id).where(Rater.name == name)) is not None:
        raise InvalidInput(f"a user named {name!r} already exists", field="name")
    rater = Rater(name=name, role=role, active=True,
                  password_hash=bcrypt.hashpw(password.encode(), bcrypt.gensalt()).decode())
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


def authenticate(db: Session, name: str, password: str) -> Rater | None:
    """The active rater with this name and password, or None; imported raters cannot log in."""
    rater = db.scalar(select(Rater).where(Rater.name == name))
    if rater is None or not rater.active or rater.password_hash is None:
        return None
    return rater if bcrypt.checkpw(password.encode(), rater.password_hash.encode()) else None
