"""What every `calibra` command shares: expected errors as one line, and printing results."""
from __future__ import annotations

import json
from collections.abc import Callable
from functools import wraps
from typing import Any, ParamSpec, TypeVar

import typer

from annotate.errors import InvalidInput, NotFound
from app.config import ConfigError
from training.errors import ArtifactError, CheckpointMismatch, FetchError, ModelLoadError, UsageError

P = ParamSpec("P")
R = TypeVar("R")


class CliError(Exception):
    pass


def reports_errors(fn: Callable[P, R]) -> Callable[P, R]:
    """Turn expected failures into one clear line on stderr and exit status 2."""
    @wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return fn(*args, **kwargs)
        except (InvalidInput, NotFound, ConfigError, ModelLoadError, FetchError, CheckpointMismatch, UsageError,
                ArtifactError, CliError) as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(2) from None
    return wrapper


def print_payload(payload: dict[str, Any], as_json: bool) -> None:
    if as_json:
        typer.echo(json.dumps(payload, indent=2, default=str))
    else:
        width = max(len(k) for k in payload)
        for key, value in payload.items():
            typer.echo(f"{key:<{width}}  {value}")


