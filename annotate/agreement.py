"""Chance-corrected agreement between raters, as pure functions of the ratings.

Ratings come as a reliability matrix: one row per rater, one column per unit (a task for the
best choice, a task's candidate for quality and factual), NaN where the rater did not rate the
unit. Not every rater sees every unit; Krippendorff's α handles that natively, and units with
fewer than two ratings carry no information about agreement.

The statistics are computed by well-kept packages (krippendorff, statsmodels, scikit-learn);
this module only shapes the data and adds bootstrap confidence intervals over units.
"""
from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

import numpy as np

LEVELS = ("nominal", "ordinal", "interval")


@dataclass(frozen=True)
class Estimate:
    """A statistic with its 95% bootstrap interval; None where the data cannot support it."""

    value: float | None
    low: float | None = None
    high: float | None = None
    units: int = 0


def pairable(matrix: np.ndarray) -> np.ndarray:
    """The columns (units) that at least two raters rated."""
    return matrix[:, (~np.isnan(matrix)).sum(axis=0) >= 2]


def krippendorff_alpha(matrix: np.ndarray, level: str) -> float | None:
    import krippendorff

    if level not in LEVELS:
        raise ValueError(f"level must be one of {LEVELS}")
    data = pairable(np.asarray(matrix, dtype=float))
    if data.shape[1] == 0 or len(np.unique(data[~np.isnan(data)])) < 2:
        return None  # no pairable units, or one value only: agreement is undefined
    return float(krippendorff.alpha(reliability_data=data, level_of_measurement=level))


def bootstrap(stat: Callable[[np.ndarray], float | None], matrix: np.ndarray, *, rounds: int = 200,
              seed: int = 0) -> Estimate:
    """`stat` on the matrix, with a percentile interval from resampling its pairable units."""
    data = pairable(np.asarray(matrix, dtype=float))
    value = stat(data)
    if value is None:
        return Estimate(None, units=data.shape[1])
    rng = np.random.default_rng(seed)
    draws = [stat(data[:, rng.integers(0, data.shape[1], data.shape[1])]) for _ in range(rounds)]
    kept = [d for d in draws if d is not None and not np.isnan(d)]
    if not kept:
        return Estimate(value, units=data.shape[1])
    low, high = np.percentile(kept, [2.5, 97.5])
    return Estimate(value, float(low), float(high), data.shape[1])


def fleiss_kappa(matrix: np.ndarray) -> float | None:
    """Fleiss' κ over the units rated by the most common number of raters.

    Fleiss' κ assumes the same number of ratings per unit; units with another count are left
    out rather than padded (α above uses all of them).
    """
    from statsmodels.stats.inter_rater import aggregate_raters
    from statsmodels.stats.inter_rater import fleiss_kappa as _fleiss

    data = pairable(np.asarray(matrix, dtype=float))
    if data.shape[1] == 0:
        return None
    counts = (~np.isnan(data)).sum(axis=0)
    modal = np.bincount(counts).argmax()
    columns = data[:, counts == modal].T
    values = np.array([col[~np.isnan(col)] for col in columns])
    table, _ = aggregate_raters(values)
    if table.shape[1] < 2:
        return None
    return float(_fleiss(table, method="fleiss"))


def cohen_kappa_matrix(matrix: np.ndarray, raters: list[str], *, min_shared: int = 2) -> dict[str, dict[str, float | None]]:
    """Cohen's κ for every pair of raters over the units both rated (None: too few shared)."""
    from sklearn.metrics import cohen_kappa_score

    data = np.asarray(matrix, dtype=float)
    out: dict[str, dict[str, float | None]] = {r: {} for r in raters}
    for i, j in itertools.combinations(range(len(raters)), 2):
        both = ~np.isnan(data[i]) & ~np.isnan(data[j])
        kappa: float | None = None
        if both.sum() >= min_shared:
            a, b = data[i, both], data[j, both]
            if len(np.unique(np.concatenate([a, b]))) > 1:
                kappa = float(cohen_kappa_score(a, b))
            elif (a == b).all():
                kappa = 1.0  # every shared unit the same single value: full agreement
        out[raters[i]][raters[j]] = out[raters[j]][raters[i]] = kappa
    for r in raters:
        out[r][r] = 1.0
    return out


Ordering = Mapping[str, Iterable[tuple[int, int]]]  # rater -> (winner, loser) pairs within one task


def preference_pairs(orderings: Iterable[Ordering]) -> list[bool]:
    """For every candidate pair that two raters both ordered, whether they ordered it alike.

    One entry per (task, candidate pair, pair of raters): the figure Stiennon et al. report as
    labeler-labeler agreement (72-73% on TL;DR) is the mean of this list.
    """
    agreements: list[bool] = []
    for task in orderings:
        seen: dict[frozenset[int], dict[str, int]] = {}
        for rater, pairs in task.items():
            for winner, loser in pairs:
                seen.setdefault(frozenset((winner, loser)), {})[rater] = winner
        for winners in seen.values():
            agreements.extend(a == b for a, b in itertools.combinations(winners.values(), 2))
    return agreements


def agreement_rate(agreements: list[bool], *, rounds: int = 200, seed: int = 0) -> Estimate:
    if not agreements:
        return Estimate(None)
    data = np.array(agreements, dtype=float)
    rng = np.random.default_rng(seed)
    means = data[rng.integers(0, len(data), (rounds, len(data)))].mean(axis=1)
    low, high = np.percentile(means, [2.5, 97.5])
    return Estimate(float(data.mean()), float(low), float(high), len(data))
