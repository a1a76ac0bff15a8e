"""Deployment settings: `calibra.toml`, then environment variables, then defaults.

Loaded once by the CLI and passed down as arguments; nothing below `app/` reads them itself.
"""
from __future__ import annotations

import os
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

ENV_PREFIX = "CALIBRA_"


@dataclass(frozen=True)
class Settings:
    home: Path = field(metadata={"help": "data and artifacts (models, adapters, the SQLite file)"})
    database_url: str = field(metadata={"help": "any SQLAlchemy URL; SQLite under home by default"})
    models_dir: Path = field(metadata={"help": "where `calibra models fetch` puts default models"})
    max_document_chars: int = field(default=40_000, metadata={"help": "longer documents are refused on import"})
    lease_minutes: float = field(default=15.0, metadata={"help": "how long an opened task stays leased"})
    replication: int = field(default=3, metadata={"help": "judgements wanted per task"})
    gold_rate: float = field(default=0.1, metadata={"help": "share of requests offered a gold task"})
    busy_timeout_s: float = field(default=30.0, metadata={
        "help": "a request that waits longer for a database lock is refused with 'try again'"})
    session_hours: float = field(default=12.0, metadata={"help": "a login lasts this long, then asks again"})
    round_min_judgements: int = field(default=30, metadata={"help": "fewer new judgements skip a round"})
    round_ranker: bool = field(default=False, metadata={"help": "rounds retrain the ranking model too"})
    round_batch_docs: int = field(default=30, metadata={"help": "fresh documents sent to annotators after a round"})
    round_schedule: str = field(default="mon 02:00", metadata={
        "help": "when the worker requests a round (UTC): DAY HH:MM, daily HH:MM, or off; "
                "`calibra round schedule` overrides it"})
    promote_min_win_rate: float = field(default=0.55, metadata={"help": "the gate's win rate over the current policy"})
    promote_max_length_growth: float = field(default=0.2, metadata={"help": "the gate's limit on summary growth"})
    next_batch_selection: str = field(default="random", metadata={
        "help": "random | uncertainty: the next batch's comparisons at random, or where the judge is least sure"})
    hacking_alarm_gap: float = field(default=0.1, metadata={
        "help": "a judge predicting a win rate this much above the annotators' raises the reward-hacking alarm"})
    request_log: Path | None = field(default=None, metadata={
        "help": "a file the app appends one line per HTTP request to: time, method, path, status, ms"})
    config_file: Path | None = None


class ConfigError(ValueError):
    pass


def _find_config_file(explicit: str | None, env: dict[str, str]) -> Path | None:
    if explicit:
        path = Path(explicit)
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist")
        return path
    for candidate in (Path("calibra.toml"), Path(env.get(f"{ENV_PREFIX}HOME", ".calibra")) / "calibra.toml"):
        if candidate.is_file():
            return candidate
    return None


def load_settings(config_file: str | None = None, environ: dict[str, str] | None = None) -> Settings:
    """Read `calibra.toml` (CALIBRA_CONFIG, ./calibra.toml or $CALIBRA_HOME/calibra.toml);
    every key can be overridden by CALIBRA_<KEY> in the environment."""
    env = dict(os.environ if environ is None else environ)
    path = _find_config_file(config_file or env.get(f"{ENV_PREFIX}CONFIG"), env)
    values: dict[str, Any] = {}
    if path is not None:
        try:
            values = tomllib.loads(path.read_text())
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: {exc}") from exc
    known = {f.name for f in fields(Settings)} - {"config_file"}
    unknown = set(values) - known
    if unknown:
        raise ConfigError(f"{path}: unknown setting(s) {', '.join(sorted(unknown))}; known: {', '.join(sorted(known))}")
    for name in known:
        if f"{ENV_PREFIX}{name.upper()}" in env:
            values[name] = env[f"{ENV_PREFIX}{name.upper()}"]

    home = Path(values.pop("home", ".calibra")).expanduser().absolute()
    database_url = values.pop("database_url", f"sqlite:///{home / 'calibra.db'}")
    models_dir = Path(values.pop("models_dir", home / "models")).expanduser().absolute()
    try:
        typed = {name: _coerce(name, value) for name, value in values.items()}
    except ValueError as exc:
        raise ConfigError(f"{path or 'environment'}: {exc}") from exc
    return Settings(home=home, database_url=database_url, models_dir=models_dir, config_file=path, **typed)


def _coerce(name: str, value: Any) -> Any:
    kinds: dict[str, Callable[[Any], Any]] = {
        "max_document_chars": int, "lease_minutes": float, "busy_timeout_s": float, "session_hours": float,
        "replication": int, "gold_rate": float,
        "round_min_judgements": int, "round_ranker": _boolean, "round_batch_docs": int, "round_schedule": str,
        "promote_min_win_rate": float, "promote_max_length_growth": float, "hacking_alarm_gap": float,
        "next_batch_selection": random_or_uncertainty, "request_log": _path_or_none}
    try:
        return kinds[name](value)
    except (TypeError, ValueError):
        raise ValueError(f"setting {name}: {value!r} is not a valid "
                         f"{getattr(kinds[name], '__name__', 'value').replace('_', ' ')}") \
            from None


def random_or_uncertainty(value: Any) -> str:
    """The next batch's selection (named so that a refusal says what it wants)."""
    text = str(value).strip().lower()
    if text not in ("random", "uncertainty"):
        raise ValueError(value)
    return text


def _path_or_none(value: Any) -> Path | None:
    """A file path; empty means none."""
    return Path(str(value)).expanduser().absolute() if str(value).strip() else None


def _boolean(value: Any) -> bool:
    """TOML gives booleans; the environment gives text."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ValueError(value)
