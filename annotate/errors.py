"""Plain exceptions of the annotation domain; the CLI and the web layer map them to messages."""
from __future__ import annotations


class InvalidInput(ValueError):
    """Input that cannot be stored, with where it came from: file, line and field when known."""

    def __init__(self, message: str, *, file: str | None = None, line: int | None = None,
                 field: str | None = None) -> None:
        self.message, self.file, self.line, self.field = message, file, line, field
        super().__init__(str(self))

    def __str__(self) -> str:
        where = ":".join(str(p) for p in (self.file, self.line) if p is not None)
        what = f"field '{self.field}': " if self.field else ""
        return f"{where + ': ' if where else ''}{what}{self.message}"


class NotFound(LookupError):
    pass
