"""Logging in, and the sessions a login opens.

Three rules shape this module:
- bcrypt is slow on purpose (a quarter of a second), so it never runs inside a database
  transaction: the account is read in one short transaction, the password checked outside any,
  and the result recorded in a second one. The web layer runs `log_in` off its event loop.
- The answer and its timing must not tell whether an account exists: an unknown name, an
  inactive account and an over-long password cost one bcrypt check like a wrong password, and
  get the same reply.
- Failed logins are limited per account name and per client address, counted in the database,
  so the limit holds across app processes and restarts.
Sessions live in the database (`WebSession`) under the hash of their token: any app process
accepts them, and deactivating an account or changing its password ends them at once.
"""
from __future__ import annotations

import functools
import hashlib
import logging
import math
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

import bcrypt
from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from db import Transactions
from db.models import LoginAttempt, Rater, WebSession, utcnow

log = logging.getLogger(__name__)
SESSION_COOKIE = "calibra-session"  # holds a session's token, for the page and the JSON API alike
BCRYPT_MAX_BYTES = 72  # bcrypt ignores what follows; such passwords are refused when set
WRONG = "Incorrect name or password."


@dataclass(frozen=True)
class LoginPolicy:
    session_hours: float = 12.0
    max_failures_per_name: int = 5
    # Higher: annotators of one vendor often share one address.
    max_failures_per_address: int = 20
    window: timedelta = timedelta(minutes=15)


class LoginRefused(Exception):
    """A login that did not succeed; `str()` is what the client is told."""

    def __init__(self, message: str, *, retry_after_s: int | None = None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@functools.cache
def _stand_in_hash() -> str:
    """Checked instead of a real hash when there is none, so that path costs the same."""
    return bcrypt.hashpw(secrets.token_bytes(16), bcrypt.gensalt()).decode()


def check_password(stored_hash: str | None, password: str) -> bool:
    """One bcrypt check whatever the account and the password's length."""
    given = password.encode("utf-8", "surrogatepass")
    ok = bcrypt.checkpw(given[:BCRYPT_MAX_BYTES], (stored_hash or _stand_in_hash()).encode())
    return ok and stored_hash is not None and len(given) <= BCRYPT_MAX_BYTES


def _recent_failures(db: Session, name: str, address: str, since: datetime) -> tuple[int, int]:
    failed = select(func.count()).select_from(LoginAttempt).where(LoginAttempt.succeeded.is_(False),
                                                                   LoginAttempt.at > since)
    return (db.scalar(failed.where(LoginAttempt.name == name)) or 0,
            db.scalar(failed.where(LoginAttempt.address == address)) or 0)


def log_in(transactions: Transactions, name: str, password: str, address: str,
           policy: LoginPolicy = LoginPolicy(), *, now: datetime | None = None) -> str:
    """A new session's token for this name and password, or `LoginRefused`."""
    now = now or utcnow()
    name, address = name.strip()[:128], address[:64]
    with transactions() as db:
        by_name, by_address = _recent_failures(db, name, address, now - policy.window)
        stored = db.scalar(select(Rater.password_hash).where(Rater.name == name, Rater.active.is_(True)))
    if by_name >= policy.max_failures_per_name or by_address >= policy.max_failures_per_address:
        log.warning("login of %r from %s refused: too many failed attempts", name, address)
        wait = math.ceil(policy.window.total_seconds() / 60)
        raise LoginRefused(f"Too many failed logins for this account or from this address; "
                           f"try again in {wait} minutes.", retry_after_s=int(policy.window.total_seconds()))
    token = secrets.token_urlsafe(32) if check_password(stored, password) else None
    with transactions() as db:
        db.add(LoginAttempt(name=name, address=address, succeeded=token is not None, at=now))
        # Old attempts and expired sessions go as new ones come, so neither table grows forever.
        db.execute(delete(LoginAttempt).where(LoginAttempt.at < now - max(policy.window, timedelta(days=1))))
        db.execute(delete(WebSession).where(WebSession.expires_at < now))
        if token is not None:
            rater_id = db.scalar(select(Rater.id).where(Rater.name == name))
            db.add(WebSession(token_hash=token_hash(token), rater_id=rater_id, created_at=now,
                              expires_at=now + timedelta(hours=policy.session_hours)))
    if token is None:
        log.warning("failed login of %r from %s", name, address)
        raise LoginRefused(WRONG)
    log.info("login of %r from %s", name, address)
    return token


def session_user(db: Session, token: str | None, *, now: datetime | None = None) -> str | None:
    """The name of the active account this unexpired session belongs to, or None."""
    rater = session_rater(db, token, now=now)
    return rater.name if rater is not None else None


def session_rater(db: Session, token: str | None, *, now: datetime | None = None) -> Rater | None:
    """The active account this unexpired session belongs to, or None."""
    if not token:
        return None
    return db.scalar(select(Rater).join(WebSession, WebSession.rater_id == Rater.id)
                     .where(WebSession.token_hash == token_hash(token), WebSession.expires_at > (now or utcnow()),
                            Rater.active.is_(True)))


def end_session(db: Session, token: str) -> None:
    db.execute(delete(WebSession).where(WebSession.token_hash == token_hash(token)))


def end_sessions_of(db: Session, rater: Rater) -> int:
    """Log an account out everywhere; the number of sessions ended."""
    ended = db.scalar(select(func.count()).select_from(WebSession).where(WebSession.rater_id == rater.id)) or 0
    db.execute(delete(WebSession).where(WebSession.rater_id == rater.id))
    return ended

