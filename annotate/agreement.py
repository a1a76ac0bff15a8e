"""Chance-corrected agreement between raters, as pure functions of the ratings.

Ratings come as a reliability matrix: one row per rater, one column per unit (a task for the
best choice, a task's candidate for quality and factual), NaN where the rater did not rate the
unit. Not every rater sees every unit; Krippendorff's α handles that natively, and units with
fewer than two ratings carry no information about agreement.

Point estimates come from well-kept packages (krippendorff, statsmodels). Bootstrap intervals
resample units, or clusters of units (a report resamples tasks, so that every statistic sees
the same resampled tasks and the weights are drawn once); to keep 200 resamples of 100k
judgements within a second, each unit's coincidence matrix (α) or category counts (Fleiss' κ)
are computed once, summed per cluster, and resampling only re-weights the sums.
`alpha_from_coincidences` is checked against the krippendorff package.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal

import numpy as np
from scipy import sparse

Level = Literal["nominal", "ordinal", "interval"]
LEVELS: Final[tuple[Level, ...]] = ("nominal", "ordinal", "interval")


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


def value_counts(matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Units x values counts of the pairable units of a reliability matrix, and the values."""
    data = pairable(np.asarray(matrix, dtype=float))
    values = np.unique(data[~np.isnan(data)])
    counts = np.zeros((data.shape[1], len(values)))
    for i, v in enumerate(values):
        counts[:, i] = (data == v).sum(axis=0)
    return counts, values


def long_value_counts(units: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The same from long data (one rating per row: its unit and its value): no rater x unit
    matrix is built, which matters for 100k judgements."""
    unit_codes = np.unique(units, return_inverse=True)[1]
    domain, value_codes = np.unique(values, return_inverse=True)
    counts = np.zeros((unit_codes.max() + 1 if len(unit_codes) else 0, len(domain)))
    np.add.at(counts, (unit_codes, value_codes), 1)
    return counts[counts.sum(axis=1) >= 2], domain.astype(float)


def alpha_from_counts(counts: np.ndarray, values: np.ndarray, level: str) -> float | None:
    """Krippendorff's α (the krippendorff package) from units x values counts."""
    import krippendorff

    if level not in LEVELS:
        raise ValueError(f"level must be one of {LEVELS}")
    if len(counts) == 0 or (counts.sum(axis=0) > 0).sum() < 2:
        return None  # no pairable units, or one value only: agreement is undefined
    return float(krippendorff.alpha(value_counts=counts, value_domain=values, level_of_measurement=level))


def krippendorff_alpha(matrix: np.ndarray, level: str) -> float | None:
    return alpha_from_counts(*value_counts(matrix), level)


def unit_coincidences(counts: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Per unit, its V x V coincidence matrix (Krippendorff 2011, section C). Summing units'
    matrices gives the coincidence matrix of any sample of units."""
    m = counts.sum(axis=1)
    return (counts[:, :, None] * counts[:, None, :] - counts[:, :, None] * np.eye(len(values))) / (m - 1)[:, None, None]


def _delta2(values: np.ndarray, marginals: np.ndarray, level: str) -> np.ndarray:
    """Squared distances between values; `marginals` (..., V) may hold a batch of samples."""
    v = len(values)
    if level == "nominal":
        return np.broadcast_to(1.0 - np.eye(v), (*marginals.shape[:-1], v, v))
    if level == "interval":
        return np.broadcast_to((values[:, None] - values[None, :]) ** 2, (*marginals.shape[:-1], v, v))
    cum = np.cumsum(marginals, axis=-1)  # ordinal: ranks between c and k, halving the ends
    n_c, n_k = marginals[..., :, None], marginals[..., None, :]
    between = cum[..., None, :] - cum[..., :, None] + n_c - (n_c + n_k) / 2
    upper = np.triu(between)
    return (upper + np.swapaxes(upper, -1, -2)) ** 2


def alphas_from_coincidences(o: np.ndarray, values: np.ndarray, level: str) -> np.ndarray:
    """α for each coincidence matrix in `o` (..., V, V); NaN where it is undefined."""
    n_c = o.sum(axis=-1)
    n = n_c.sum(axis=-1)
    d2 = _delta2(values, n_c, level)
    expected = (n_c[..., :, None] * n_c[..., None, :] * d2).sum(axis=(-2, -1))
    observed = (o * d2).sum(axis=(-2, -1))
    with np.errstate(divide="ignore", invalid="ignore"):
        alpha = 1 - (n - 1) * observed / expected
    return np.where((n > 1) & ((n_c > 0).sum(axis=-1) >= 2) & (expected > 0), alpha, np.nan)


def alpha_from_coincidences(o: np.ndarray, values: np.ndarray, level: str) -> float | None:
    alpha = float(alphas_from_coincidences(o, values, level))
    return None if np.isnan(alpha) else alpha


def _percentile_interval(draws: list[float | None]) -> tuple[float | None, float | None]:
    kept = [d for d in draws if d is not None and not np.isnan(d)]
    if not kept:
        return None, None
    low, high = np.percentile(kept, [2.5, 97.5])
    return float(low), float(high)


def _poisson_table(resolution: int = 1 << 16) -> np.ndarray:
    """Quantiles of Poisson(1) at `resolution` evenly spaced levels: uniform 16-bit draws
    looked up here are Poisson(1) counts to within 1/65536 of probability mass."""
    from scipy.stats import poisson

    return poisson.ppf((np.arange(resolution) + 0.5) / resolution, 1.0).astype(np.float32)


POISSON_1 = _poisson_table()


def resample_weights(units: int, rounds: int, seed: int) -> np.ndarray:
    """Bootstrap weights, one row per resample: Poisson(1) counts per unit (the Poisson
    bootstrap), which matches multinomial resampling for more than a few dozen units and,
    drawn through a lookup table, costs a few nanoseconds per unit and resample."""
    draws = np.random.default_rng(seed).integers(0, len(POISSON_1), size=(rounds, units), dtype=np.uint16)
    return POISSON_1[draws]


@dataclass(frozen=True)
class Bootstrap:
    """One set of resampling weights over clusters of units (rounds x clusters)."""

    weights: np.ndarray

    @classmethod
    def draw(cls, clusters: int, rounds: int = 200, seed: int = 0) -> Bootstrap:
        return cls(resample_weights(clusters, rounds, seed))

    @property
    def rounds(self) -> int:
        return self.weights.shape[0]

    def totals(self, per_unit: np.ndarray, clusters: np.ndarray | None = None) -> np.ndarray:
        """For every resample, the weighted sum of the per-unit rows (units x k gives rounds x
        k). `clusters` names each unit's cluster; without it unit i is cluster i."""
        rows = np.asarray(per_unit, dtype=np.float32).reshape(len(per_unit), -1)
        if clusters is not None:
            membership = sparse.csr_matrix((np.ones(len(clusters), dtype=np.float32),
                                            (clusters, np.arange(len(clusters)))),
                                           shape=(self.weights.shape[1], len(clusters)))
            rows = np.asarray(membership @ rows)
        return (self.weights @ rows).astype(float)


def _plan(units: int, rounds: int, seed: int, bootstrap: Bootstrap | None) -> Bootstrap:
    return bootstrap if bootstrap is not None else Bootstrap.draw(units, rounds, seed)


def alpha_estimates(counts: np.ndarray, values: np.ndarray, levels: tuple[str, ...], *, rounds: int = 200,
                    seed: int = 0, bootstrap: Bootstrap | None = None,
                    clusters: np.ndarray | None = None) -> dict[str, Estimate]:
    """Krippendorff's α at several levels of measurement from one set of resampled
    coincidences, with percentile intervals from resampling units (or their clusters)."""
    out = {level: Estimate(alpha_from_counts(counts, values, level), units=len(counts)) for level in levels}
    if all(e.value is None for e in out.values()):
        return out
    plan = _plan(len(counts), rounds, seed, bootstrap)
    flat = unit_coincidences(counts, values).reshape(len(counts), -1)
    samples = plan.totals(flat, clusters).reshape(plan.rounds, len(values), len(values))
    for level, e in out.items():
        if e.value is not None:
            draws = list(alphas_from_coincidences(samples, values, level))
            out[level] = Estimate(e.value, *_percentile_interval(draws), len(counts))
    return out


def alpha_estimate(counts: np.ndarray, values: np.ndarray, level: str, *, rounds: int = 200,
                   seed: int = 0) -> Estimate:
    """Krippendorff's α with a percentile interval from resampling units."""
    return alpha_estimates(counts, values, (level,), rounds=rounds, seed=seed)[level]


def fleiss_rows(counts: np.ndarray) -> np.ndarray:
    """Which units Fleiss' κ uses: those rated by the most common number of raters.

    Fleiss' κ assumes the same number of ratings per unit; units with another count are left
    out rather than padded (α above uses all of them).
    """
    n = counts.sum(axis=1).astype(int)
    return n == np.bincount(n).argmax() if len(counts) else np.zeros(0, dtype=bool)


def fleiss_table(counts: np.ndarray) -> np.ndarray:
    return counts[fleiss_rows(counts)]


def fleiss_kappa(matrix: np.ndarray) -> float | None:
    return _fleiss(fleiss_table(value_counts(matrix)[0]))


def _fleiss(table: np.ndarray) -> float | None:
    from statsmodels.stats.inter_rater import fleiss_kappa as statsmodels_fleiss

    if table.shape[0] == 0 or table.shape[1] < 2 or (table.sum(axis=0) > 0).sum() < 2:
        return None
    return float(statsmodels_fleiss(table, method="fleiss"))


def fleiss_estimate(counts: np.ndarray, *, rounds: int = 200, seed: int = 0, bootstrap: Bootstrap | None = None,
                    clusters: np.ndarray | None = None) -> Estimate:
    """Fleiss' κ; `clusters`, when given, names the cluster of each row of `counts`."""
    kept = fleiss_rows(counts)
    table = counts[kept]
    value = _fleiss(table)
    if value is None:
        return Estimate(None, units=len(table))
    # Fleiss' formula with weighted units, for all resamples at once (the value is statsmodels').
    n = table.sum(axis=1)[0]
    agreement = ((table**2).sum(axis=1) - n) / (n * (n - 1))  # P_i per unit
    plan = _plan(len(table), rounds, seed, bootstrap)
    sums = plan.totals(np.column_stack([np.ones(len(table)), agreement, table]),
                       None if clusters is None else clusters[kept])
    total = sums[:, 0]
    p_bar = sums[:, 1] / total
    p_j = sums[:, 2:] / (n * total[:, None])
    p_e = (p_j**2).sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        draws = list(np.where(p_e < 1, (p_bar - p_e) / (1 - p_e), np.nan))
    return Estimate(value, *_percentile_interval(draws), len(table))


def cohen_kappa(confusion: np.ndarray) -> float | None:
    """Cohen's κ from two raters' confusion matrix: (po - pe) / (1 - pe)."""
    n = confusion.sum()
    if n == 0:
        return None
    po = np.trace(confusion) / n
    pe = (confusion.sum(axis=0) * confusion.sum(axis=1)).sum() / n**2
    if pe == 1:
        return 1.0 if po == 1 else None  # one category only: agreement is total or undefined
    return float((po - pe) / (1 - pe))


def cohen_kappa_matrix(matrix: np.ndarray, raters: list[str], *,
                       min_shared: int = 2) -> dict[str, dict[str, float | None]]:
    """Cohen's κ for every pair of raters over the units both rated (None: too few shared).

    All pairs' confusion matrices come from one product of one-hot ratings (raters*V x units
    times its transpose), instead of a loop over pairs.
    """
    data = np.asarray(matrix, dtype=float)
    values = np.unique(data[~np.isnan(data)])
    r, v = len(raters), len(values)
    onehot = (data[:, None, :] == values[None, :, None]).astype(np.float32)  # raters x V x units
    flat = onehot.reshape(r * v, data.shape[1])  # explicit: no -1 to infer when no value was given
    confusion = (flat @ flat.T).reshape(r, v, r, v).transpose(0, 2, 1, 3)  # [i, j] is i's values x j's
    out: dict[str, dict[str, float | None]] = {name: {name: 1.0} for name in raters}
    for i in range(r):
        for j in range(i + 1, r):
            kappa = cohen_kappa(confusion[i, j]) if confusion[i, j].sum() >= min_shared else None
            out[raters[i]][raters[j]] = out[raters[j]][raters[i]] = kappa
    return out


def mean_estimate(values: np.ndarray, *, rounds: int = 200, seed: int = 0, bootstrap: Bootstrap | None = None,
                  clusters: np.ndarray | None = None) -> Estimate:
    """A mean of 0/1 outcomes (weighted by `values`' second column when given) with a bootstrap
    interval over its rows (or their clusters)."""
    if len(values) == 0:  # before the reshape: an empty array has no -1 dimension to infer
        return Estimate(None)
    data = np.asarray(values, dtype=float).reshape(len(values), -1)
    agree, weight = data[:, 0], data[:, 1] if data.shape[1] > 1 else np.ones(len(data))
    value = float((agree * weight).sum() / weight.sum())
    sums = _plan(len(data), rounds, seed, bootstrap).totals(np.column_stack([agree * weight, weight]), clusters)
    with np.errstate(divide="ignore", invalid="ignore"):  # a resample can draw no rows at all
        draws = list(sums[:, 0] / sums[:, 1])
    return Estimate(value, *_percentile_interval(draws), len(data))
