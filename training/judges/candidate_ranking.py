"""Ranking m candidates of one document into (better, worse) pairs for SLiC-HF.

- Tournament with the pairwise ranking model (the SLiC-HF paper's choice): neighbours play,
  winners go on (c1 v c2, c3 v c4, then the winners), an odd one out gets a bye to the next
  round. m candidates take exactly m - 1 comparisons, each one a (winner, loser) pair, and the
  last winner is the best. Each round's comparisons are scored in one batch.
- With the reward model: score all m and sort; pairs are the best against each other one.

Candidates marked `demoted` (not summaries at all, see `annotate.export.repeats_layout`) lose
to every other candidate whatever the judge says, with confidence 1: a judge trained on human
comparisons has never seen such output, and scores a copy of the post as close to the post.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from annotate.export import repeats_layout


@dataclass(frozen=True)
class RankedPair:
    better: int  # index into the candidates
    worse: int
    confidence: float  # the judge's P(better ≻ worse)


@dataclass(frozen=True)
class Ranking:
    best: int
    pairs: list[RankedPair]
    scores: list[float] | None = None  # reward scores, when the reward model ranked


def tournament(m: int, prefer: Callable[[Sequence[tuple[int, int]]], Sequence[float]],
               demoted: Sequence[bool] = ()) -> Ranking:
    """Knock-out among candidates 0..m-1; `prefer` gives P(a ≻ b) for a batch of (a, b)."""
    if m < 1:
        raise ValueError("a tournament needs at least one candidate")
    low = _flags(demoted, m)

    def decide(games: Sequence[tuple[int, int]]) -> list[float]:
        return [overrule(p, low[a], low[b]) for (a, b), p in zip(games, prefer(games), strict=True)]

    players = list(range(m))
    pairs: list[RankedPair] = []
    while len(players) > 1:
        games = [(players[i], players[i + 1]) for i in range(0, len(players) - 1, 2)]
        bye = [players[-1]] if len(players) % 2 else []
        winners = []
        for (a, b), p in zip(games, decide(games), strict=True):
            better, worse, conf = (a, b, p) if p >= 0.5 else (b, a, 1 - p)
            pairs.append(RankedPair(better, worse, float(conf)))
            winners.append(better)
        players = winners + bye
    return Ranking(players[0], pairs)


def rank_by_scores(scores: Sequence[float], demoted: Sequence[bool] = ()) -> Ranking:
    """Sort by reward; the best against every other candidate, confidence σ(r_best - r)."""
    if not scores:
        raise ValueError("nothing to rank")
    low = _flags(demoted, len(scores))
    order = sorted(range(len(scores)), key=lambda i: (low[i], -scores[i]))
    best = order[0]
    pairs = [RankedPair(best, i, overrule(1 / (1 + math.exp(scores[i] - scores[best])), low[best], low[i]))
             for i in order[1:]]
    return Ranking(best, pairs, list(scores))


def overrule(p_a: float, a_demoted: bool, b_demoted: bool) -> float:
    """P(a ≻ b) once the rule has spoken: a demoted side loses to one that is not."""
    return float(b_demoted) if a_demoted != b_demoted else p_a


def _flags(demoted: Sequence[bool], m: int) -> list[bool]:
    if demoted and len(demoted) != m:
        raise ValueError(f"{len(demoted)} demotion flags for {m} candidates")
    return list(demoted) or [False] * m


def ranking_scores(best: int, winners: Sequence[int], scores: Sequence[float] | None,
                   texts: Sequence[str]) -> list[tuple[float, int]]:
    """(score, rank) per candidate of a ranking: the reward itself, or else the number of
    comparisons won (`winners` holds the better side of each); rank 1 is `best`, and candidates
    that restate the prompt's layout come after all others, as in the ranking."""
    m = len(texts)
    if scores is not None:
        scores = list(scores)
    else:
        scores = [0.0] * m
        for i in winners:
            scores[i] += 1
    demoted = [repeats_layout(t) for t in texts]
    order = sorted(range(m), key=lambda i: (i != best, demoted[i], -scores[i]))
    ranks = {i: r + 1 for r, i in enumerate(order)}
    return [(scores[i], ranks[i]) for i in range(m)]
