"""Judgements turned into training data: preference pairs, and judgements with full provenance.

Aggregation, per task (gold tasks and flagged raters left out):
- every judgement's best choice is a vote for the best over each other summary shown;
- a quality gap of at least `min_quality_gap` between two summaries the best choice does not
  order (neither is the best) is half a vote for the better-rated one;
- a judgement flagged "all unacceptable" gives no votes: neither side is worth learning from;
- votes are summed per pair; the side with more wins is `chosen`, an exact tie is dropped
  (and counted). `soft_label` is the share of votes for `chosen`;
- `margin` comes from the stated strength on the Llama 2 scales (small: 1, 2/3, 1/3, 0; large:
  3, 2, 1, 0) for best-vs-other votes, averaged over the raters who gave one, or from the mean
  quality gap, or is 0;
- `weight` = (2 * soft_label - 1) * the mean competence of the voting raters (their
  leave-one-out majority agreement; 1 where unknown): unanimous pairs from reliable raters
  count fully, contested ones from unreliable raters little.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
from sqlalchemy import select
from sqlalchemy.orm import Session

from annotate.errors import InvalidInput
from annotate.judgement_frames import Filters, Frames, load_frames
from annotate.lengths import SIMILAR_LENGTH, similar_length, words
from annotate.readers import read_records
from annotate.report import Thresholds, flagged, per_rater
from annotate.tldr_layout import bare_summary, canonical_prompt, format_post, repeats_layout, split_prompt
from db.models import Candidate, ComparisonTask, Document

# What the training side reads from here (it imports nothing else of `annotate`): the pairs,
# the post layout, the similar-length rule, and the file reader with its errors for files of pairs.
__all__ = ["EXPORT_FORMATS", "SIMILAR_LENGTH", "ExportConfig", "Filters", "InvalidInput", "bare_summary",
           "canonical_prompt", "format_post", "judgements_table", "preference_pairs", "read_records", "repeats_layout",
           "similar_length", "split_prompt", "words", "write_table"]

MARGINS = {"small": {"significantly": 1.0, "better": 2 / 3, "slightly": 1 / 3, "negligibly": 0.0},
           "large": {"significantly": 3.0, "better": 2.0, "slightly": 1.0, "negligibly": 0.0}}
MARGIN_MODES = ("none", "small", "large", "quality")


@dataclass(frozen=True)
class ExportConfig:
    margin: str = field(default="none", metadata={"help": "none | small | large (Llama 2 scales) | quality"})
    min_quality_gap: int = field(default=2, metadata={"help": "quality gap that orders two non-best summaries"})
    exclude_flagged: bool = True
    thresholds: Thresholds = Thresholds()

    def __post_init__(self) -> None:
        if self.margin not in MARGIN_MODES:
            raise ValueError(f"margin must be one of {', '.join(MARGIN_MODES)}")


@dataclass
class PairVotes:
    wins: dict[int, float] = field(default_factory=lambda: defaultdict(float))
    margins: dict[int, list[float]] = field(default_factory=lambda: defaultdict(list))
    gaps: dict[int, list[float]] = field(default_factory=lambda: defaultdict(list))  # quality of c minus the other
    raters: set[str] = field(default_factory=set)
    round: Any = None


def _record_gap(v: PairVotes, quality: dict[tuple[int, int], float], judgement_id: int, a: int, b: int) -> None:
    qa, qb = quality.get((judgement_id, a)), quality.get((judgement_id, b))
    if qa is not None and qb is not None:
        v.gaps[a].append(float(qa - qb))
        v.gaps[b].append(float(qb - qa))


def _votes(frames: Frames, cfg: ExportConfig, skip_raters: set[str]) -> dict[tuple[int, frozenset[int]], PairVotes]:
    j = frames.judgements
    j = j[j.gold.isna() & ~j.all_unacceptable & ~j.rater.isin(skip_raters)].dropna(subset=["best"])
    shown = frames.shown.groupby("judgement_id").candidate_id.apply(list)
    quality = {(r.judgement_id, r.candidate_id): r.quality
               for r in frames.ratings.dropna(subset=["quality"]).itertuples()}
    votes: dict[tuple[int, frozenset[int]], PairVotes] = defaultdict(PairVotes)
    for row in j.itertuples():
        best, cands = int(row.best), shown.get(row.judgement_id, [])
        for other in cands:
            if other == best:
                continue
            v = votes[(row.task_id, frozenset((best, other)))]
            v.wins[best] += 1
            v.raters.add(row.rater)
            v.round = row.round
            if row.strength is not None and cfg.margin in MARGINS:
                v.margins[best].append(MARGINS[cfg.margin][row.strength])
            _record_gap(v, quality, row.judgement_id, best, other)
        rest = [c for c in cands if c != best]
        for a_i, a in enumerate(rest):
            for b in rest[a_i + 1:]:
                qa, qb = quality.get((row.judgement_id, a)), quality.get((row.judgement_id, b))
                if qa is None or qb is None or abs(qa - qb) < cfg.min_quality_gap:
                    continue
                winner = a if qa > qb else b
                v = votes[(row.task_id, frozenset((a, b)))]
                v.wins[winner] += 0.5
                v.raters.add(row.rater)
                v.round = row.round
                _record_gap(v, quality, row.judgement_id, a, b)
    return votes


def preference_pairs(db: Session, cfg: ExportConfig = ExportConfig(),
                     filters: Filters = Filters()) -> tuple[pd.DataFrame, dict[str, int]]:
    """The `prompt / chosen / rejected` table with margin, weight and provenance, and counts of
    what was left out."""
    frames = load_frames(db, filters)
    raters = per_rater(frames, cfg.thresholds)
    skipped = flagged(raters) if cfg.exclude_flagged else set()
    competence = {r["rater"]: r["majority_agreement"] for r in raters if r["majority_agreement"] is not None}
    votes = _votes(frames, cfg, skipped)
    cand_ids = {c for _, pair in votes for c in pair}
    texts = dict(db.execute(select(Candidate.id, Candidate.text).where(Candidate.id.in_(cand_ids))).all())
    task_docs = dict(db.execute(select(ComparisonTask.id, ComparisonTask.document_id)
                                .where(ComparisonTask.id.in_({t for t, _ in votes}))).all())
    docs = {d.id: d for d in db.scalars(select(Document).where(Document.id.in_(set(task_docs.values()))))}
    sources = frames.shown.drop_duplicates("candidate_id").set_index("candidate_id").source.to_dict()
    rows, ties = [], 0
    for (task_id, pair), v in votes.items():
        a, b = sorted(pair)
        if v.wins[a] == v.wins[b]:
            ties += 1
            continue
        chosen, rejected = (a, b) if v.wins[a] > v.wins[b] else (b, a)
        share = v.wins[chosen] / (v.wins[a] + v.wins[b])
        margin = 0.0
        if cfg.margin in MARGINS and v.margins[chosen]:
            margin = sum(v.margins[chosen]) / len(v.margins[chosen])
        elif cfg.margin == "quality" and v.gaps[chosen]:
            margin = max(0.0, sum(v.gaps[chosen]) / len(v.gaps[chosen]))
        skill = sum(competence.get(r, 1.0) for r in v.raters) / len(v.raters)
        doc = docs[task_docs[task_id]]
        rows.append({
            "prompt": format_post(doc.subreddit, doc.title, doc.text), "chosen": texts[chosen],
            "rejected": texts[rejected],
            "soft_label": round(share, 4), "margin": round(margin, 4), "weight": round((2 * share - 1) * skill, 4),
            "round": None if pd.isna(v.round) else int(v.round), "task_id": task_id, "document_id": doc.id,
            "chosen_candidate_id": chosen, "rejected_candidate_id": rejected,
            "chosen_source": sources.get(chosen), "rejected_source": sources.get(rejected),
            "votes": round(v.wins[a] + v.wins[b], 2), "raters": sorted(v.raters),
        })
    gold = int(frames.judgements.gold.notna().sum())
    left_out = {"ties": ties, "flagged_raters": len(skipped), "gold_judgements": gold,
                "all_unacceptable_judgements": int(frames.judgements.all_unacceptable.sum())}
    return pd.DataFrame(rows), left_out


def judgements_table(db: Session, filters: Filters = Filters()) -> pd.DataFrame:
    """One row per judgement with its provenance: rater, time taken, the order shown (candidate
    ids and their sources), the choice, strength, flags and every per-summary rating."""
    frames = load_frames(db, filters)
    shown = frames.shown.sort_values(["judgement_id", "position"]).groupby("judgement_id")
    ratings = frames.ratings.groupby("judgement_id")
    out = frames.judgements.copy()
    if out.empty:  # nothing judged yet: the columns without rows (apply on no groups gives a frame)
        for column in ("display_order", "display_sources", "ratings"):
            out[column] = pd.Series(dtype=object)
    else:
        out["display_order"] = out.judgement_id.map(shown.candidate_id.apply(list))
        out["display_sources"] = out.judgement_id.map(shown.source.apply(list))
        out["ratings"] = out.judgement_id.map(ratings.apply(
            lambda g: [{"candidate_id": int(r.candidate_id),
                        "quality": None if pd.isna(r.quality) else int(r.quality),
                        "factual": None if pd.isna(r.factual) else bool(r.factual)} for r in g.itertuples()],
            include_groups=False))
    out["created_at"] = out.created_at.astype(str)
    return out.rename(columns={"best": "best_candidate_id", "gold": "gold_candidate_id"})


EXPORT_FORMATS = ("jsonl", "parquet", "hf-dataset")


def write_table(frame: pd.DataFrame, out: Path, fmt: str) -> None:
    """JSONL, Parquet, or a Hugging Face dataset folder (`datasets.load_from_disk` reads it),
    written whole or not at all (`_replacing`)."""
    if fmt not in EXPORT_FORMATS:
        raise InvalidInput(f"must be one of {', '.join(EXPORT_FORMATS)}", field="format")
    with _replacing(out) as tmp:
        if fmt == "jsonl" and frame.empty:
            tmp.write_text("")  # pandas would write one blank line, which no JSONL reader takes
        elif fmt == "jsonl":
            frame.to_json(tmp, orient="records", lines=True, force_ascii=False)
        elif fmt == "parquet":
            frame.to_parquet(tmp, index=False)
        else:
            import datasets

            datasets.Dataset.from_pandas(frame, preserve_index=False).save_to_disk(str(tmp))


@contextmanager
def _replacing(dest: Path) -> Iterator[Path]:
    """Yield a path to write a file or a folder at, in a hidden folder of its own beside `dest`;
    on success it is renamed into `dest`'s place, and on any error the hidden folder goes. A reader
    never sees half an export, and a failed or interrupted one leaves the previous one as it was."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{dest.name}.tmp-", dir=dest.parent))
    try:
        written = staging / dest.name
        yield written
        if dest.exists() and (dest.is_dir() or written.is_dir()):
            os.replace(dest, staging / "previous")  # rename() puts a folder only where nothing is
        os.replace(written, dest)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
