"""The agreement report: overall agreement, per-rater quality and bias, per-source win rates.

Every figure of the admin dashboard and of `calibra agreement --json` comes from here, computed
from `judgement_frames` with the statistics of `agreement`.

Missing statistics: every object of statistics (`overall`, each row of `per_rater` and each row
of `per_source`'s `sources`) has a `missing` mapping that names each of its statistics that could
not be computed, with the reason, e.g. `"missing": {"pairwise_agreement": "no best choices"}`.
A statistic named there is null (an estimate: its `value` is null; `best_position_shares`:
empty; `cohen_kappa_best`: no pair of raters with a κ); one not named there was computed. An
empty database, or one that holds only imported per-summary ratings, gives a report of missing
statistics, not an error.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from scipy.stats import chisquare

from annotate.agreement import (
    Bootstrap,
    Estimate,
    alpha_estimates,
    cohen_kappa_matrix,
    fleiss_estimate,
    long_value_counts,
    mean_estimate,
)
from annotate.judgement_frames import Frames
from annotate.lengths import SIMILAR_LENGTH


@dataclass(frozen=True)
class Thresholds:
    """Raters below any of these are flagged; flagged raters can be left out of training data."""

    min_majority_agreement: float = 0.5
    min_gold_accuracy: float = 0.6
    position_bias_p: float = 0.001
    min_judgements: int = 10  # fewer than this: too little to judge a rater by


@dataclass(frozen=True)
class Reliability:
    matrix: np.ndarray  # raters x units, NaN where a rater did not rate a unit
    raters: list[str]
    units: list[Any]


def reliability(values: pd.DataFrame, unit: str, value: str) -> Reliability:
    """A rater x unit matrix from rows with `rater`, `unit` and `value` (first rating kept)."""
    data = values.dropna(subset=[value]).drop_duplicates(["rater", unit], keep="first")
    raters = sorted(data.rater.unique().tolist())
    units = sorted(data[unit].unique().tolist())
    matrix = np.full((len(raters), len(units)), np.nan)
    r_index = {r: i for i, r in enumerate(raters)}
    u_index = {u: i for i, u in enumerate(units)}
    # integer indices even when no row is left (an empty column maps to floats, which cannot index)
    rows = data.rater.map(r_index).to_numpy(dtype=np.int64)
    matrix[rows, data[unit].map(u_index).to_numpy(dtype=np.int64)] = data[value].astype(float)
    return Reliability(matrix, raters, units)


def _rated(frames: Frames) -> pd.DataFrame:
    return frames.ratings.merge(frames.judgements[["judgement_id", "rater"]], on="judgement_id")


def pairwise_agreement(judgements: pd.DataFrame) -> np.ndarray:
    return _pairwise_agreement(judgements)[0]


def agreement_by_round(judgements: pd.DataFrame) -> pd.DataFrame:
    """The pairwise preference agreement of each round's tasks (tasks of no round are left out),
    with the number of rater pairs behind it."""
    rows = []
    for number, part in judgements.dropna(subset=["round"]).groupby("round"):
        pairs = pairwise_agreement(part)
        if len(pairs) and pairs[:, 1].sum():
            agreed = (pairs[:, 0] * pairs[:, 1]).sum() / pairs[:, 1].sum()
            rows.append({"round": int(number), "pairwise agreement": agreed, "rater pairs": len(pairs)})
    return pd.DataFrame(rows, columns=["round", "pairwise agreement", "rater pairs"])


def _pairwise_agreement(judgements: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Rows of (agreed, pairs) for every two raters of a task: the candidate pairs both ordered.

    A best choice orders the best against each other summary. Two raters who chose the same
    best ordered the same n - 1 pairs alike; two who chose differently both ordered only the
    pair of their two choices, and oppositely. The share of agreeing pairs is the figure
    Stiennon et al. report as labeler-labeler agreement (72-73% on TL;DR).
    """
    j = judgements.dropna(subset=["best"])[["task_id", "rater", "best", "n_shown"]]
    both = j.merge(j, on="task_id", suffixes=("_a", "_b"))
    both = both[both.rater_a < both.rater_b]
    same = (both.best_a == both.best_b).to_numpy()
    rows = np.column_stack([same.astype(float), np.where(same, both.n_shown_a - 1, 1).astype(float)])
    return rows, both.task_id.to_numpy()


class TaskBootstrap:
    """The report's resampling plan: tasks are resampled, once for all statistics, so units
    of one task (its summaries, its raters' pairs) move together and every interval comes from
    the same resampled data."""

    def __init__(self, frames: Frames, rounds: int, seed: int = 0) -> None:
        self.tasks = np.unique(frames.judgements.task_id.to_numpy())
        self.plan = Bootstrap.draw(len(self.tasks), rounds, seed)
        shown = frames.shown[["judgement_id", "candidate_id"]].merge(frames.judgements[["judgement_id", "task_id"]])
        self._candidate_task = shown.drop_duplicates("candidate_id").set_index("candidate_id").task_id

    def of_tasks(self, task_ids: np.ndarray) -> np.ndarray:
        return np.searchsorted(self.tasks, task_ids)

    def of_candidates(self, candidate_ids: np.ndarray) -> np.ndarray:
        return self.of_tasks(self._candidate_task.loc[candidate_ids].to_numpy())


def _why_undefined(frames: Frames, ratings: int, counts: np.ndarray, what: str, unit: str) -> str:
    """Why agreement on `what` has no value, given how many of them there are and the units x
    values counts of the units rated two or more times: the cases where `agreement` gives None."""
    if frames.judgements.empty:
        return "no judgements"
    if ratings == 0:
        return f"no {what}"
    if len(counts) == 0:
        return f"no {unit} has {what} from two or more raters"
    return "only one value given: agreement beyond chance is undefined"


def overall(frames: Frames, rounds: int = 200, boot: TaskBootstrap | None = None) -> dict[str, Any]:
    """Agreement over all raters: Krippendorff's α and Fleiss' κ with 95% intervals, the pairwise
    preference agreement, Cohen's κ per pair of raters, and `missing` (see the module)."""
    best = reliability(frames.judgements, "task_id", "best_slot")
    rated = _rated(frames).drop_duplicates(["rater", "candidate_id"], keep="first")
    boot = boot or TaskBootstrap(frames, rounds)
    best_units, best_counts = _counts(frames.judgements.drop_duplicates(["rater", "task_id"]), "task_id", "best_slot")
    quality_units, quality = _counts(rated, "candidate_id", "quality")
    factual_units, factual = _counts(rated.assign(factual=rated.factual.astype(float)), "candidate_id", "factual")
    pairs, pair_tasks = _pairwise_agreement(frames.judgements)
    quality_alpha = alpha_estimates(*quality, ("ordinal", "interval"), bootstrap=boot.plan,
                                    clusters=boot.of_candidates(quality_units))
    factual_clusters = boot.of_candidates(factual_units)
    estimates = {
        "best_alpha_nominal": alpha_estimates(*best_counts, ("nominal",), bootstrap=boot.plan,
                                              clusters=boot.of_tasks(best_units))["nominal"],
        "pairwise_agreement": mean_estimate(pairs, bootstrap=boot.plan, clusters=boot.of_tasks(pair_tasks)),
        "quality_alpha_ordinal": quality_alpha["ordinal"],
        "quality_alpha_interval": quality_alpha["interval"],
        "factual_alpha_nominal": alpha_estimates(*factual, ("nominal",), bootstrap=boot.plan,
                                                 clusters=factual_clusters)["nominal"],
        "factual_fleiss_kappa": fleiss_estimate(factual[0], bootstrap=boot.plan, clusters=factual_clusters),
    }
    best_why = _why_undefined(frames, int(frames.judgements.best_slot.notna().sum()), best_counts[0],
                              "best choices", "task")
    quality_why = _why_undefined(frames, int(rated.quality.notna().sum()), quality[0], "quality ratings", "summary")
    factual_why = _why_undefined(frames, int(rated.factual.notna().sum()), factual[0], "factual ratings", "summary")
    why = {"best_alpha_nominal": best_why, "pairwise_agreement": best_why, "quality_alpha_ordinal": quality_why,
           "quality_alpha_interval": quality_why, "factual_alpha_nominal": factual_why,
           "factual_fleiss_kappa": factual_why}
    missing = {name: why[name] for name, e in estimates.items() if e.value is None}
    kappa = cohen_kappa_matrix(best.matrix, best.raters)
    if all(k is None for a, row in kappa.items() for b, k in row.items() if a != b):
        missing["cohen_kappa_best"] = (best_why if len(best_counts[0]) == 0
                                       else "no two raters made best choices on two or more of the same tasks")
    return {"judgements": len(frames.judgements), "raters": int(frames.judgements.rater.nunique()), **estimates,
            "cohen_kappa_best": kappa, "missing": missing}


def _counts(values: pd.DataFrame, unit: str, value: str) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray]]:
    """The units that two or more raters rated (sorted, as `long_value_counts` orders them),
    and their units x values counts."""
    units, values_ = _long(values, unit, value)
    ids, n = np.unique(units, return_counts=True)
    return ids[n >= 2], long_value_counts(units, values_)


def _long(values: pd.DataFrame, unit: str, value: str) -> tuple[np.ndarray, np.ndarray]:
    data = values.dropna(subset=[value])
    return data[unit].to_numpy(), data[value].astype(float).to_numpy()


def _majority_agreement(judgements: pd.DataFrame) -> pd.Series:
    """Per judgement: does its best choice match the majority of the *other* raters of the task?
    Left out where fewer than two others judged the task or the others are split evenly."""
    j = judgements.dropna(subset=["best_slot"])
    slots = j.best_slot.astype(int).to_numpy()
    tasks, task_index = np.unique(j.task_id.to_numpy(), return_inverse=True)
    counts = np.zeros((len(tasks), slots.max() + 1 if len(slots) else 1))
    np.add.at(counts, (task_index, slots), 1)
    others = counts[task_index]
    others[np.arange(len(slots)), slots] -= 1
    top = others.max(axis=1)
    clear = ((others == top[:, None]).sum(axis=1) == 1) & (others.sum(axis=1) >= 2)
    agree = others[np.arange(len(slots)), slots] == top
    return pd.Series(agree[clear], index=j.judgement_id.to_numpy()[clear], dtype=bool)


def _longer_wins(frames: Frames) -> pd.DataFrame:
    """One row per (judgement, other summary) of different lengths: did the longer one win?"""
    best = frames.judgements[["judgement_id", "rater", "best"]].dropna(subset=["best"])
    pairs = frames.shown.merge(best, on="judgement_id")
    winner_words = pairs[pairs.candidate_id == pairs.best][["judgement_id", "words"]].rename(
        columns={"words": "w_best"})
    pairs = pairs[pairs.candidate_id != pairs.best].merge(winner_words, on="judgement_id")
    pairs = pairs[pairs.words != pairs.w_best]
    return pairs.assign(longer_won=pairs.w_best > pairs.words)[["rater", "longer_won"]]


def position_bias(judgements: pd.DataFrame) -> tuple[list[float], float | None]:
    """Share of best votes per displayed position, and the p-value of a chi-square test against
    what a position-blind rater would give (1/n for each of the n summaries shown)."""
    return position_bias_by(judgements.assign(_all=0), "_all").get(0, ([], None))


def position_bias_by(judgements: pd.DataFrame, key: str) -> dict[Any, tuple[list[float], float | None]]:
    """`position_bias` for every value of `key` (a rater) from one pass over the table."""
    data = judgements.dropna(subset=["best_position"])
    if data.empty:
        return {}
    positions = int(data.n_shown.max())
    groups, group = np.unique(data[key].to_numpy(), return_inverse=True)
    observed = np.zeros((len(groups), positions))
    np.add.at(observed, (group, data.best_position.astype(int).to_numpy()), 1)
    # a position-blind rater shown n summaries puts 1/n of a vote on each of the first n
    shown = data.n_shown.astype(int).to_numpy()
    expected = np.zeros((len(groups), positions))
    for n in np.unique(shown):
        expected[:, :n] += (np.bincount(group[shown == n], minlength=len(groups)) / n)[:, None]
    out = {}
    for g, name in enumerate(groups):
        keep = expected[g] > 0
        p = float(chisquare(observed[g][keep], expected[g][keep]).pvalue) if keep.sum() > 1 else None
        out[name] = ((observed[g] / observed[g].sum()).round(4).tolist(), p)
    return out


# Why each of a rater's statistics can be null: one cause each.
RATER_MISSING = {
    "median_seconds": "no time recorded",
    # a shared task: one that two or more other raters judged, with a clear majority among them
    "majority_agreement": "no shared tasks",
    "gold_accuracy": "no gold tasks judged",
    "best_position_shares": "no best choices",
    "position_bias_p": "no best choices",
    "longer_wins": "no best choice between summaries of different lengths",
    "longer_wins_pool": "no best choice between summaries of different lengths by any rater",
    "quality_mean": "no quality ratings",
    "quality_sd": "fewer than two quality ratings",
    "drift_majority_agreement": "no majority agreement in both halves of their judgements",
    "drift_median_seconds": "no times recorded in both halves of their judgements",
}

# Why each of a source's statistics can be null.
SOURCE_MISSING = {
    "win_rate": "no comparisons with another source",
    "length_controlled_win_rate": "no comparisons with another source's summary of similar length",
    "bt_low": "no comparisons between two or more sources",
    "bt_high": "no comparisons between two or more sources",
    "mean_quality": "no quality ratings",
    "factual_rate": "no factual ratings",
}


def _missing(row: dict[str, Any], reasons: dict[str, str]) -> dict[str, str]:
    """The row's statistics that are null (or empty lists), each with its reason."""
    return {name: why for name, why in reasons.items() if row[name] is None or row[name] == []}


def per_rater(frames: Frames, thresholds: Thresholds = Thresholds()) -> list[dict[str, Any]]:
    """One row per rater: volume, speed, agreement with the others, gold accuracy, position and
    length bias, quality given, drift, flags, and `missing` (see the module; `RATER_MISSING`)."""
    j = frames.judgements
    majority = _majority_agreement(j)
    longer = _longer_wins(frames)
    pool_longer = float(longer.longer_won.mean()) if len(longer) else None
    # Group once: filtering the 300k-row tables per rater would scan them once per rater.
    longer_by = dict(tuple(longer.groupby("rater").longer_won))
    quality_by = dict(tuple(_rated(frames).dropna(subset=["quality"]).groupby("rater").quality))
    bias = position_bias_by(j, "rater")
    skipped = frames.skips.rater.value_counts()
    empty = pd.Series(dtype=float)
    out = []
    for rater, mine in j.sort_values("created_at").groupby("rater"):
        agree = majority.reindex(mine.judgement_id).dropna()
        gold = mine.dropna(subset=["gold"])
        shares, p = bias.get(rater, ([], None))
        lw = longer_by.get(rater, empty)
        q = quality_by.get(rater, empty)
        half = len(mine) // 2
        first, second = mine.iloc[:half], mine.iloc[half:]
        row = {
            "rater": rater,
            "judged": len(mine),
            "skipped": int(skipped.get(rater, 0)),
            "median_seconds": float(mine.seconds.median()) if mine.seconds.notna().any() else None,
            "majority_agreement": float(agree.mean()) if len(agree) else None,
            "gold_judged": len(gold),
            "gold_accuracy": float((gold.best == gold.gold).mean()) if len(gold) else None,
            "best_position_shares": shares,
            "position_bias_p": p,
            "longer_wins": float(lw.mean()) if len(lw) else None,
            "longer_wins_pool": pool_longer,
            "quality_mean": float(q.mean()) if len(q) else None,
            "quality_sd": float(q.std()) if len(q) > 1 else None,
            # drift: the same rater's first half of judgements against the second half
            "drift_majority_agreement": _diff(majority.reindex(first.judgement_id).dropna(),
                                              majority.reindex(second.judgement_id).dropna()),
            "drift_median_seconds": _diff(first.seconds.dropna(), second.seconds.dropna(), stat="median"),
        }
        row["flags"] = _flags(row, thresholds)
        row["missing"] = _missing(row, RATER_MISSING)
        out.append(row)
    return out


def _diff(a: pd.Series, b: pd.Series, stat: str = "mean") -> float | None:
    if len(a) == 0 or len(b) == 0:
        return None
    return float(getattr(b, stat)() - getattr(a, stat)())


def _flags(row: dict[str, Any], t: Thresholds) -> list[str]:
    if row["judged"] < t.min_judgements:
        return []
    flags = []
    if row["majority_agreement"] is not None and row["majority_agreement"] < t.min_majority_agreement:
        flags.append("low majority agreement")
    if row["gold_accuracy"] is not None and row["gold_judged"] >= 3 and row["gold_accuracy"] < t.min_gold_accuracy:
        flags.append("low gold accuracy")
    if row["position_bias_p"] is not None and row["position_bias_p"] < t.position_bias_p:
        flags.append("position bias")
    return flags


def flagged(raters: list[dict[str, Any]]) -> set[str]:
    """The raters of a `per_rater` table with any flag: their votes stay out of training data."""
    return {r["rater"] for r in raters if r["flags"]}


def bradley_terry_strengths(wins: np.ndarray, iterations: int = 200) -> np.ndarray:
    """Strengths (log scale, mean 0) from wins matrices (..., S, S) by Hunter's MM algorithm;
    every pair gets a pseudo-count of half a game each way, so a source that never lost or
    never won still has a finite strength."""
    s = wins.shape[-1]
    w = wins.astype(float) + 0.5 * (1 - np.eye(s))
    games = w + np.swapaxes(w, -1, -2)
    won = w.sum(axis=-1)
    p = np.ones(wins.shape[:-1])
    for _ in range(iterations):
        p = won / (games / (p[..., :, None] + p[..., None, :])).sum(axis=-1)
        p /= np.exp(np.log(p).mean(axis=-1, keepdims=True))
    return np.log(p)


def bradley_terry(wins: pd.DataFrame, iterations: int = 200) -> pd.Series:
    return pd.Series(bradley_terry_strengths(wins.to_numpy(), iterations), index=list(wins.index))


def _pairwise(frames: Frames) -> pd.DataFrame:
    """One row per (judgement, winner, loser) between summaries of different sources."""
    best = frames.judgements[["judgement_id", "best", "round"]].dropna(subset=["best"])
    shown = frames.shown.merge(best, on="judgement_id")
    winners = shown[shown.candidate_id == shown.best][["judgement_id", "source", "words"]]
    losers = shown[shown.candidate_id != shown.best][["judgement_id", "source", "words", "round"]]
    pairs = losers.merge(winners, on="judgement_id", suffixes=("_loser", "_winner"))
    return pairs[pairs.source_loser != pairs.source_winner]


def per_source(frames: Frames, rounds: int = 200, boot: TaskBootstrap | None = None) -> dict[str, Any]:
    """Win rates between model versions (and the human reference), Bradley-Terry strengths with
    bootstrap intervals, mean quality, factual rate and length (each source's row with `missing`,
    see the module; `SOURCE_MISSING`), and win rates per round (tasks of no round left out, as in
    `agreement_by_round`: imported tasks and tasks created outside the loop have none)."""
    pairs = _pairwise(frames)
    sources = sorted(frames.shown.source.dropna().unique())
    wins = pd.crosstab(pairs.source_winner, pairs.source_loser).reindex(index=sources, columns=sources, fill_value=0)
    games = wins + wins.T
    rate = (wins / games.replace(0, np.nan)).round(4)
    # Length control: only pairs whose lengths are within 20% of each other.
    similar = pairs[(pairs.words_winner - pairs.words_loser).abs()
                    <= SIMILAR_LENGTH * pairs[["words_winner", "words_loser"]].max(axis=1)]
    rated = frames.ratings.merge(frames.shown[["judgement_id", "candidate_id", "source"]],
                                 on=["judgement_id", "candidate_id"])
    strengths = bradley_terry(wins) if len(sources) > 1 else pd.Series(0.0, index=sources)
    intervals = _bt_intervals(pairs, sources, boot or TaskBootstrap(frames, rounds),
                              frames.judgements.set_index("judgement_id").task_id)
    table = []
    for s in sources:
        won = int(wins.loc[s].sum()) if len(sources) > 1 else 0
        played = int(games.loc[s].sum()) if len(sources) > 1 else 0
        sim = similar[(similar.source_winner == s) | (similar.source_loser == s)]
        q = rated[rated.source == s]
        row = {
            "source": s, "wins": won, "comparisons": played,
            "win_rate": won / played if played else None,
            "length_controlled_win_rate": float((sim.source_winner == s).mean()) if len(sim) else None,
            "bt_strength": float(strengths[s]), "bt_low": intervals[s][0], "bt_high": intervals[s][1],
            "mean_quality": float(q.quality.mean()) if q.quality.notna().any() else None,
            "factual_rate": float(q.factual.dropna().astype(float).mean()) if q.factual.notna().any() else None,
            "mean_words": float(frames.shown[frames.shown.source == s].drop_duplicates("candidate_id").words.mean()),
        }
        table.append({**row, "missing": _missing(row, SOURCE_MISSING)})
    in_rounds = pairs.dropna(subset=["round"])
    both_sides = pd.concat([in_rounds.assign(source=in_rounds.source_winner, won=1.0),
                            in_rounds.assign(source=in_rounds.source_loser, won=0.0)])
    by_round = [{"round": int(rnd), "source": src, "win_rate": float(rate_), "comparisons": int(n)}
                for (rnd, src), (rate_, n) in both_sides.groupby(["round", "source"]).won.agg(["mean", "size"])
                .iterrows()]
    return {"sources": table, "win_rate_matrix": _nested(rate), "wins_matrix": _nested(wins), "by_round": by_round}


def _bt_intervals(pairs: pd.DataFrame, sources: list[str], boot: TaskBootstrap,
                  task_of: pd.Series) -> dict[str, tuple[Any, Any]]:
    """Percentile intervals of the strengths, resampling tasks (with all their judgements)."""
    if len(sources) < 2 or pairs.empty:
        return {s: (None, None) for s in sources}
    def codes(column: pd.Series) -> np.ndarray:
        return pd.Categorical(column, categories=sources).codes.astype(np.int64)

    cell = codes(pairs.source_winner) * len(sources) + codes(pairs.source_loser)
    judgement_ids, row_judgement = np.unique(pairs.judgement_id.to_numpy(), return_inverse=True)
    cells = len(sources) ** 2
    per_judgement = np.bincount(row_judgement * cells + cell, minlength=len(judgement_ids) * cells)
    per_judgement = per_judgement.reshape(len(judgement_ids), cells)
    wins = boot.plan.totals(per_judgement, boot.of_tasks(task_of.loc[judgement_ids].to_numpy()))
    strengths = bradley_terry_strengths(wins.reshape(boot.plan.rounds, len(sources), len(sources)), iterations=100)
    low, high = np.percentile(strengths, [2.5, 97.5], axis=0)
    return {s: (float(low[i]), float(high[i])) for i, s in enumerate(sources)}


def _nested(frame: pd.DataFrame) -> dict[str, dict[str, Any]]:
    return {r: {c: (None if pd.isna(v) else float(v)) for c, v in row.items()} for r, row in frame.iterrows()}


@dataclass
class Report:
    overall: dict[str, Any]
    raters: list[dict[str, Any]]
    models: dict[str, Any]
    filters: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        def plain(v: Any) -> Any:
            if isinstance(v, Estimate):
                return asdict(v)
            if isinstance(v, dict):
                return {k: plain(x) for k, x in v.items()}
            if isinstance(v, list):
                return [plain(x) for x in v]
            return v
        return {"overall": plain(self.overall), "raters": plain(self.raters), "models": plain(self.models),
                "filters": self.filters}


def build_report(frames: Frames, *, thresholds: Thresholds = Thresholds(), rounds: int = 200,
                 filters: dict[str, Any] | None = None) -> Report:
    """The whole report, resampling tasks once for every interval. Whatever the frames hold (no
    judgements, no best choices, no ratings) it is built; what cannot be computed is listed in
    `missing` with the reason (see the module)."""
    boot = TaskBootstrap(frames, rounds)
    return Report(overall(frames, rounds, boot), per_rater(frames, thresholds), per_source(frames, rounds, boot),
                  filters or {})
