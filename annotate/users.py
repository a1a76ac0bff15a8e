"""Raters: creation with a bcrypt password hash, and login checks."""
from __future__ import annotations

import bcrypt
from sqlalchemy import select
from sqlalchemy.orm import Session

from annotate.errors import InvalidInput
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


def authenticate(db: Session, name: str, password: str) -> Rater | None:
    """The active rater with this name and password, or None; imported raters cannot log in."""
    rater = db.scalar(select(Rater).where(Rater.name == name))
    if rater is None or not rater.active or rater.password_hash is None:
        return None
    return rater if bcrypt.checkpw(password.encode(), rater.password_hash.encode()) else None
