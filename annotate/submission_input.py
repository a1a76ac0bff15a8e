"""What an annotator's request may contain, checked before anything reaches the database.

The page and the API send the same things in different shapes (radio labels, JSON); both end
here, so one set of rules decides. Types are strict on purpose: a JSON `true` is not the rating
1, and `4.0` is not a whole number. Every refusal names the field, so a client can fix it
without being told anything about the task behind it.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from annotate.errors import InvalidInput
from annotate.submissions import LETTERS, Submission, SummaryRating
from db.models import Strength

COMMENT_MAX_CHARS = 2_000
SKIP_REASON_MAX_CHARS = 200
MAX_ID = 2**63 - 1  # the largest id any supported database stores
# Tab and newline are text; other control characters (NUL among them) are not.
_CONTROL = {chr(c) for c in range(32)} - {"\t", "\n", "\r"} | {"\x7f"}
_LETTERS = frozenset(LETTERS)  # a set, not the string: "AB" is in "ABCD" but is no letter
_STRENGTHS = frozenset(s.value for s in Strength)


def assignment_id(value: Any) -> int:
    if type(value) is not int or not 1 <= value <= MAX_ID:
        raise InvalidInput("must be the assignment_id of the task you were given", field="assignment_id")
    return value


def text(value: Any, field: str, max_chars: int, *, required: bool) -> str | None:
    """Plain text of bounded length without control characters; None or blank when allowed."""
    if value is None or (isinstance(value, str) and not value.strip()):
        if required:
            raise InvalidInput("is empty", field=field)
        return None
    if not isinstance(value, str):
        raise InvalidInput(f"must be text, not {type(value).__name__}", field=field)
    if len(value) > max_chars:
        raise InvalidInput(f"is {len(value)} characters long; at most {max_chars} are kept", field=field)
    if any(ch in _CONTROL for ch in value):
        raise InvalidInput("contains control characters", field=field)
    try:  # JSON can carry lone surrogates ("\ud800"), which no database can store as UTF-8
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidInput("is not valid Unicode text", field=field) from None
    return value.strip()


def _per_letter(value: Any, field: str) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise InvalidInput("must map summary letters to values, e.g. {\"A\": ...}", field=field)
    for key in value:
        if key not in _LETTERS:
            raise InvalidInput(f"{str(key)[:8]!r} is not a summary letter ({', '.join(LETTERS)})", field=field)
    return value


def quality(value: Any, letter: str) -> int | None:
    if value is None:
        return None
    if type(value) is not int or not 1 <= value <= 7:
        raise InvalidInput("must be a whole number from 1 to 7", field=f"quality_{letter}")
    return value


def factual(value: Any, letter: str) -> bool | None:
    if value is None:
        return None
    if type(value) is not bool:
        raise InvalidInput("must be true or false", field=f"factual_{letter}")
    return value


def submission(*, best: Any, quality_by_letter: Any, factual_by_letter: Any, strength: Any = None,
               all_unacceptable: Any = False, comment: Any = None) -> Submission:
    """A `Submission` from untrusted values, or `InvalidInput` naming the first bad field.
    Whether the letters were shown on this task is the domain's check (`submissions.validate`)."""
    if best is not None and (not isinstance(best, str) or best not in _LETTERS):
        raise InvalidInput(f"must be one of the letters {', '.join(LETTERS)}", field="best")
    qualities = _per_letter(quality_by_letter, "quality")
    factuals = _per_letter(factual_by_letter, "factual")
    if strength is not None and (not isinstance(strength, str) or strength not in _STRENGTHS):
        raise InvalidInput(f"must be one of {', '.join(s.value for s in Strength)}", field="strength")
    if type(all_unacceptable) is not bool:
        raise InvalidInput("must be true or false", field="all_unacceptable")
    letters = sorted(set(qualities) | set(factuals))
    return Submission(best=best or None,
                      ratings={k: SummaryRating(quality(qualities.get(k), k), factual(factuals.get(k), k))
                               for k in letters},
                      strength=strength, all_unacceptable=all_unacceptable,
                      comment=text(comment, "comment", COMMENT_MAX_CHARS, required=False))


def skip_reason(value: Any) -> str:
    reason = text(value, "reason", SKIP_REASON_MAX_CHARS, required=True)
    assert reason is not None  # required=True refuses blanks
    return reason
