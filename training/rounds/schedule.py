"""The round schedule: a spec people write (`mon 02:00`, `daily 03:30`, `off`) and the
APScheduler trigger it stands for."""
from __future__ import annotations

import re

from apscheduler.triggers.cron import CronTrigger
from sqlalchemy.orm import Session

from training.errors import UsageError
from training.rounds.store import get_setting, set_setting

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
SPEC = re.compile(r"^(?P<day>mon|tue|wed|thu|fri|sat|sun|daily)\s+(?P<h>[01]?\d|2[0-3]):(?P<m>[0-5]\d)$")
SETTING = "round_schedule"


def parse_schedule(spec: str) -> CronTrigger | None:
    """The trigger of a spec (UTC), None for `off`; a clear error for anything else."""
    text = spec.strip().lower()
    if text == "off":
        return None
    match = SPEC.match(text)
    if match is None:
        raise UsageError(f"schedule {spec!r}: use DAY HH:MM (DAY one of {', '.join(DAYS)} or daily), or off")
    day = "*" if match["day"] == "daily" else match["day"]
    return CronTrigger(day_of_week=day, hour=int(match["h"]), minute=int(match["m"]), timezone="UTC")


def current_schedule(db: Session, default: str) -> str:
    """The schedule in force: the one set in the database (`calibra round schedule`, the
    Training page), else the deployment's `round_schedule` setting."""
    return get_setting(db, SETTING) or default


def set_schedule(db: Session, spec: str, by: str) -> str:
    """Check a spec and keep it in the database, where every worker follows it; returns it as
    stored."""
    parse_schedule(spec)
    text = spec.strip().lower()
    set_setting(db, SETTING, text, by)
    return text
