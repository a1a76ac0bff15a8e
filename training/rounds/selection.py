"""Which comparisons the next batch asks annotators for.

`random`: fresh documents at random, each task 2-4 of their candidates. `uncertainty`: from a
pool of fresh documents twice the batch, the documents, and the one pair of candidates on each,
where the current judge's preference is closest to 0.5, so that each human verdict teaches the
next judge what it does not know yet (active learning; `bench/active_selection.py` measures what
it buys).
"""
from __future__ import annotations

import random
from collections.abc import Callable, Sequence

SELECTIONS = ("random", "uncertainty")
POOL_FACTOR = 2  # uncertainty chooses among this many times the batch's documents

Prefer = Callable[[Sequence[tuple[str, str, str]]], Sequence[float]]  # (post, a, b) -> P(a > b)


def random_documents(fresh: Sequence[int], k: int, seed: int) -> list[int]:
    """k of the fresh documents, drawn at random (seeded, so a resumed round draws the same)."""
    return sorted(random.Random(seed).sample(list(fresh), min(k, len(fresh))))


def most_uncertain(probabilities: Sequence[float], k: int) -> list[int]:
    """The indices of the k probabilities closest to 0.5, closest first (ties: lower index)."""
    return sorted(range(len(probabilities)), key=lambda i: (abs(probabilities[i] - 0.5), i))[:k]


def uncertain_pairs(posts: dict[int, str], candidates: dict[int, list[tuple[int, str]]], prefer: Prefer,
                    k: int) -> dict[int, tuple[int, int]]:
    """For each document, its pair of candidates (ids) the judge is least sure about; then the k
    documents whose pair is closest to a coin toss."""
    pairs = [(doc, a, b) for doc, cands in candidates.items()
             for i, (a, _) in enumerate(cands) for b, _ in cands[i + 1:]]
    texts = {cid: text for cands in candidates.values() for cid, text in cands}
    probabilities = list(prefer([(posts[doc], texts[a], texts[b]) for doc, a, b in pairs])) if pairs else []
    best: dict[int, tuple[float, int, int]] = {}
    for (doc, a, b), p in zip(pairs, probabilities, strict=True):
        distance = abs(p - 0.5)
        if doc not in best or distance < best[doc][0]:
            best[doc] = (distance, a, b)
    closest = sorted(best, key=lambda doc: (best[doc][0], doc))[:k]
    return {doc: best[doc][1:] for doc in closest}
