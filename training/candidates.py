"""Sample candidate summaries from a model version: for the database's documents (stored as
they are made, so an interrupted run goes on where it stopped) or for a file's posts."""
from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session
from tqdm.auto import tqdm
from transformers import PreTrainedTokenizerBase

from annotate.export import repeats_layout
from db.engine import Transactions
from db.models import Candidate, CandidateOrigin, Document, ModelVersion, digest
from training.generation import Sample, SamplingConfig, generate
from training.loading import CausalLM, load_causal_lm, load_tokenizer
from training.prompts import DocPrompt, resolve_template
from training.registry import resolve_version


def documents_to_sample(db: Session, version: ModelVersion, *, limit: int | None, per_doc: int,
                        split: str | None = None, source: str | None = None,
                        document_ids: Sequence[int] | None = None) -> list[DocPrompt]:
    """Documents with text that have fewer than `per_doc` candidates from this version, oldest first.

    A run that was interrupted therefore picks up where it stopped.
    """
    have = (select(Candidate.document_id, func.count().label("n"))
            .where(Candidate.model_version_id == version.id).group_by(Candidate.document_id).subquery())
    query = (select(Document).outerjoin(have, have.c.document_id == Document.id)
             .where(Document.has_text.is_(True), func.coalesce(have.c.n, 0) < per_doc)
             .order_by(Document.id))
    if split is not None:
        query = query.where(Document.split == split)
    if source is not None:
        query = query.where(Document.source == source)
    if document_ids is not None:
        query = query.where(Document.id.in_(list(document_ids)))
    if limit is not None:
        query = query.limit(limit)
    return [DocPrompt(d.id, d.text, d.title, d.subreddit) for d in db.scalars(query)]


def store_samples(db: Session, document_id: int, version: ModelVersion, samples: list[Sample],
                  decoding: dict[str, object]) -> int:
    """Add the samples that are new for this document; returns how many were added."""
    existing = set(db.scalars(select(Candidate.text_hash).where(Candidate.document_id == document_id)))
    added = 0
    for s in samples:
        key = digest(s.text)
        if key in existing:
            continue
        existing.add(key)
        db.add(Candidate(document_id=document_id, text=s.text, text_hash=key, origin=CandidateOrigin.MODEL,
                         model_version_id=version.id, decoding=decoding, token_count=s.token_count))
        added += 1
    db.flush()
    return added


def _sampler(tx: Transactions, model: str | None, device: str
             ) -> tuple[ModelVersion, CausalLM, PreTrainedTokenizerBase]:
    with tx() as db:
        version = resolve_version(db, model)
        db.expunge(version)
    tokenizer = load_tokenizer(version.base_model)
    return version, load_causal_lm(version.base_model, device=device, adapter=version.artifact_path), tokenizer


def generate_candidates(tx: Transactions, cfg: SamplingConfig, *, model: str | None = None, limit: int | None = None,
                        split: str | None = None, source: str | None = None,
                        document_ids: Sequence[int] | None = None, device: str = "auto",
                        progress: bool = True, drop_restatements: bool = False) -> dict[str, Any]:
    """Sample `cfg.per_doc` candidates for every document that has fewer from this version (the
    active policy by default), a transaction per document; how many were added.

    `drop_restatements` keeps samples that restate the post's layout lines (`repeats_layout`)
    away from annotators: they are no summaries, and every judge already ranks them last."""
    version, lm, tokenizer = _sampler(tx, model, device)
    decoding = cfg.decoding(resolve_template(tokenizer, cfg.template))
    with tx() as db:
        prompts = documents_to_sample(db, version, limit=limit, per_doc=cfg.per_doc, split=split, source=source,
                                      document_ids=document_ids)
    added = dropped = 0
    with tqdm(total=len(prompts), desc="generating", unit="doc", disable=not progress) as bar:
        for doc, samples in generate(lm, tokenizer, prompts, cfg):
            kept = [s for s in samples if not (drop_restatements and repeats_layout(s.text))]
            dropped += len(samples) - len(kept)
            with tx() as db:  # each document's samples are kept if the run stops
                added += store_samples(db, int(str(doc.key)), version, kept, decoding)
            bar.update()
            bar.set_postfix(candidates=added)
    return {"model": version.name, "documents": len(prompts), "candidates_added": added,
            "restatements_dropped": dropped}


def summarise_to_file(tx: Transactions, cfg: SamplingConfig, prompts: Sequence[DocPrompt], out: Path, *,
                      model: str | None = None, device: str = "auto", progress: bool = True) -> int:
    """Summaries of posts that are not in the database, one JSON line per sample; how many."""
    version, lm, tokenizer = _sampler(tx, model, device)
    decoding = cfg.decoding(resolve_template(tokenizer, cfg.template))
    written = 0
    with out.open("w") as fh, tqdm(total=len(prompts), desc="generating", unit="doc", disable=not progress) as bar:
        for doc, samples in generate(lm, tokenizer, prompts, cfg):
            for s in samples:
                fh.write(json.dumps({"line": doc.key, "title": doc.title, "summary": s.text,
                                     "tokens": s.token_count, "model": version.name, **decoding}) + "\n")
                written += 1
            fh.flush()
            bar.update()
    return written
