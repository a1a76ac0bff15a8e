"""Preference pairs for the reward and ranking models: reading, validating and splitting.

Pairs come from `calibra export preferences` (or any `prompt / chosen / rejected` file, as TRL
reads them) with optional `margin`, `weight`, `round` and `document_id`. Held-out splits are
made by document, never by pair: a post whose summaries sit on both sides of a split would let
a model score well by remembering the post.
"""
from __future__ import annotations

import hashlib
import random
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypedDict

from annotate.export import InvalidInput, bare_summary, canonical_prompt, read_records

REQUIRED = ("prompt", "chosen", "rejected")


class _Where(TypedDict):
    """Where a record came from, as `InvalidInput` takes it."""
    file: str | None
    line: int | None


@dataclass(frozen=True)
class PreferencePair:
    prompt: str
    chosen: str
    rejected: str
    margin: float = 0.0
    weight: float = 1.0
    round: int | None = None
    document: str = ""  # what the split keeps together; the prompt's hash when not given

    @property
    def key(self) -> str:
        return self.document or hashlib.sha1(self.prompt.encode()).hexdigest()


def _number(data: dict[str, Any], name: str, default: float, where: _Where) -> float:
    value = data.get(name)
    if value is None or value == "":
        return default
    try:
        return float(value)
    except (TypeError, ValueError):
        raise InvalidInput(f"expected a number, got {value!r}", field=name, **where) from None


def pair_from_record(data: dict[str, Any], *, file: str | None = None, line: int | None = None) -> PreferencePair:
    where: _Where = {"file": file, "line": line}
    texts = {}
    for name in REQUIRED:
        value = data.get(name)
        # TL;DR files write posts on one line and prefix summaries with "TL;DR:"; the app does not
        text = (canonical_prompt if name == "prompt" else bare_summary)(value) if isinstance(value, str) else ""
        if not text.strip():
            raise InvalidInput("missing or empty text", field=name, **where)
        texts[name] = text
    if texts["chosen"] == texts["rejected"]:
        raise InvalidInput("chosen and rejected are the same text", field="rejected", **where)
    weight = _number(data, "weight", 1.0, where)
    if weight < 0:
        raise InvalidInput(f"weights cannot be negative, got {weight}", field="weight", **where)
    rnd = data.get("round")
    doc = data.get("document_id")
    return PreferencePair(texts["prompt"], texts["chosen"], texts["rejected"],
                          margin=_number(data, "margin", 0.0, where), weight=weight,
                          round=None if rnd is None or rnd == "" else int(_number(data, "round", 0, where)),
                          document="" if doc is None or doc == "" else str(doc))


def read_pairs(path: Path, limit: int | None = None) -> list[PreferencePair]:
    """Every pair of a JSONL, CSV or Parquet file; the first bad row stops it with its line."""
    pairs = []
    for record in read_records(Path(path)):
        pairs.append(pair_from_record(record.data, file=str(path), line=record.line))
        if limit is not None and len(pairs) >= limit:
            break
    if not pairs:
        raise InvalidInput("no preference pairs in the file", file=str(path))
    return pairs


def pairs_from_rows(rows: Iterable[dict[str, Any]]) -> list[PreferencePair]:
    """Pairs from exported rows (`annotate.export.preference_pairs`), already validated there."""
    return [pair_from_record(r) for r in rows]


def split_by_document(pairs: Sequence[PreferencePair], test_fraction: float, seed: int = 0
                      ) -> tuple[list[PreferencePair], list[PreferencePair]]:
    """(train, test) with whole documents on one side, about `test_fraction` of them held out."""
    if not 0 < test_fraction < 1:
        raise ValueError("test_fraction must be between 0 and 1")
    keys = sorted({p.key for p in pairs})
    random.Random(seed).shuffle(keys)
    held = set(keys[:max(1, round(len(keys) * test_fraction))])
    return [p for p in pairs if p.key not in held], [p for p in pairs if p.key in held]


def split_newest_round(pairs: Sequence[PreferencePair]) -> tuple[list[PreferencePair], list[PreferencePair]]:
    """(train, test) with the newest round held out (Llama 2's habit: the newest batch tests the
    model that will judge it), documents that also occur in older rounds moved to the test side
    so no post sits on both sides."""
    rounds = {p.round for p in pairs if p.round is not None}
    if len(rounds) < 2:
        raise ValueError("a split by newest round needs pairs from two or more rounds")
    newest = max(rounds)
    held = {p.key for p in pairs if p.round == newest}
    return [p for p in pairs if p.key not in held], [p for p in pairs if p.key in held]


def document_batches(pairs: Sequence[PreferencePair], size: Callable[[list[PreferencePair]], int], budget: int,
                     seed: int) -> list[list[PreferencePair]]:
    """Pairs grouped by document, documents shuffled, and filled into batches of about `budget`
    inputs as `size` counts them. A document is never split across batches, so the judges read
    its post once for all its summaries (a document larger than the budget gets a batch alone)."""
    by_doc: dict[str, list[PreferencePair]] = {}
    for p in pairs:
        by_doc.setdefault(p.key, []).append(p)
    keys = sorted(by_doc)
    random.Random(seed).shuffle(keys)
    batches: list[list[PreferencePair]] = []
    used = 0
    for key in keys:
        n = size(by_doc[key])
        if not batches or (batches[-1] and used + n > budget):
            batches.append([])
            used = 0
        batches[-1].extend(by_doc[key])
        used += n
    return batches
