"""The data of a SLiC-HF round, kept in a JSONL file so a round can be inspected and re-run.

- sample-rank: m candidates sampled from the current policy per document (SLiC-HF: m = 8,
  temperature 0.7, top-k 40), ranked by the ranking model (tournament, m - 1 pairs) or the
  reward model (sorted; the best against each other candidate).
- direct: the human preference pairs as they are.

One line per document: its post, human reference (if any), candidates, the ranking's pairs
with the judge's confidence, and the best candidate. Lines are appended as documents finish, so
an interrupted `sample-rank` goes on from the first document not in the file.
"""
from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from annotate.export import InvalidInput, format_post, split_prompt
from training.judges.candidate_ranking import Ranking
from training.judges.pairs import PreferencePair
from training.prompts import DocPrompt, build_prompt
from training.slic.collator import SlicExample


@dataclass(frozen=True)
class RoundDocument:
    key: str
    text: str
    title: str | None = None
    subreddit: str | None = None
    reference: str | None = None

    def prompt(self) -> DocPrompt:
        return DocPrompt(self.key, self.text, self.title, self.subreddit)

    def post(self) -> str:
        """The post as the judges read it."""
        return format_post(self.subreddit, self.title, self.text)


@dataclass
class RankedDocument:
    document: RoundDocument
    candidates: list[str]
    best: int
    pairs: list[tuple[int, int, float]]  # (better, worse, judge confidence), indices into candidates
    judge: str
    scores: list[float] | None = None
    origin: str = "sample-rank"
    extra: dict[str, Any] = field(default_factory=dict)

    def as_json(self) -> str:
        return json.dumps(asdict(self), ensure_ascii=False)

    @classmethod
    def from_json(cls, line: str) -> RankedDocument:
        data = json.loads(line)
        data["document"] = RoundDocument(**data["document"])
        data["pairs"] = [tuple(p) for p in data["pairs"]]
        return cls(**data)


def ranked_document(doc: RoundDocument, candidates: list[str], ranking: Ranking, judge: str) -> RankedDocument:
    return RankedDocument(doc, candidates, ranking.best,
                          [(p.better, p.worse, round(p.confidence, 4)) for p in ranking.pairs], judge, ranking.scores)


def read_round(path: Path) -> list[RankedDocument]:
    if not path.is_file():
        raise InvalidInput("no such file", file=str(path))
    out = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if line.strip():
            try:
                out.append(RankedDocument.from_json(line))
            except (json.JSONDecodeError, TypeError, KeyError) as exc:
                raise InvalidInput(f"not a SLiC-HF round record: {exc}", file=str(path), line=number) from None
    return out


def sample_rank(docs: Sequence[RoundDocument],
                sample: Callable[[list[DocPrompt]], Iterator[tuple[DocPrompt, list[str]]]],
                rank: Callable[[str, list[str]], Ranking], judge: str, out: Path,
                on_document: Callable[[RankedDocument], None] | None = None) -> list[RankedDocument]:
    """Sample and rank every document not yet in `out`, appending each as it is done; a resumed
    file must have been ranked by the same judge (a round's pairs come from one judge)."""
    records = read_round(out) if out.exists() else []
    for number, record in enumerate(records, start=1):
        if record.judge != judge:
            raise InvalidInput(f"ranked by {record.judge}, not by {judge}: resume with the same judge, or start "
                               "the round in a new folder", file=str(out), line=number)
    done = {r.document.key: r for r in records}
    todo = [d for d in docs if d.key not in done]
    by_key = {d.key: d for d in todo}
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("a") as fh:
        for prompt, texts in sample([d.prompt() for d in todo]):
            doc = by_key[str(prompt.key)]
            unique = list(dict.fromkeys(t for t in texts if t.strip()))
            if len(unique) < 2:
                continue  # nothing to compare: every sample was the same (or empty)
            record = ranked_document(doc, unique, rank(doc.post(), unique), judge)
            fh.write(record.as_json() + "\n")
            fh.flush()
            done[doc.key] = record
            if on_document:
                on_document(record)
    return [done[d.key] for d in docs if d.key in done]


def direct_documents(pairs: Sequence[PreferencePair]) -> list[RankedDocument]:
    """Human pairs as round records: each document's chosen/rejected summaries, and as its best
    the summary chosen most often."""
    grouped: dict[str, tuple[PreferencePair, list[str], list[tuple[int, int, float]]]] = {}
    for p in pairs:
        first, cands, edges = grouped.setdefault(p.key, (p, [], []))
        for text in (p.chosen, p.rejected):
            if text not in cands:
                cands.append(text)
        edges.append((cands.index(p.chosen), cands.index(p.rejected), 1.0))
    out = []
    for key, (first, cands, edges) in grouped.items():
        wins = [sum(1 for b, _, _ in edges if b == i) for i in range(len(cands))]
        out.append(RankedDocument(document_from_prompt(key, first.prompt), cands,
                                  max(range(len(cands)), key=wins.__getitem__), edges, "human", origin="direct"))
    return out


def document_from_prompt(key: str, prompt: str) -> RoundDocument:
    """A pair's prompt (the exported layout) back into its post, title and subreddit."""
    post, title, subreddit = split_prompt(prompt)
    return RoundDocument(key, post, title, subreddit)


def slic_examples(records: Sequence[RankedDocument], tokenizer: Any, template: str, y_ref: str,
                  max_prompt_tokens: int, pairs_per_document: int = 0) -> list[SlicExample]:
    """One example per ranked pair (the judge's most confident `pairs_per_document` when set):
    y_ref is the human reference when asked and present, else the best-ranked candidate."""
    out: list[SlicExample] = []
    for r in records:
        doc = r.document
        prompt = build_prompt(tokenizer, doc.prompt(), template, max_prompt_tokens)
        ref = doc.reference if y_ref == "reference" and doc.reference else r.candidates[r.best]
        pairs = sorted(r.pairs, key=lambda p: -p[2])[:pairs_per_document] if pairs_per_document else r.pairs
        out.extend(SlicExample(prompt, r.candidates[b], r.candidates[w], ref) for b, w, _ in pairs)
    return out


def sft_examples(docs: Sequence[RoundDocument], tokenizer: Any, template: str, max_prompt_tokens: int,
                 preferred: dict[str, list[str]]) -> list[SlicExample]:
    """One example per human reference and per preferred summary (`preferred` by document key);
    only the reference side is trained on (`SlicConfig.sft`)."""
    out: list[SlicExample] = []
    for doc in docs:
        targets = list(dict.fromkeys([*([doc.reference] if doc.reference else []), *preferred.get(doc.key, [])]))
        prompt = build_prompt(tokenizer, doc.prompt(), template, max_prompt_tokens)
        out.extend(SlicExample(prompt, "", "", t) for t in targets)
    return out
