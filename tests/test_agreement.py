"""Agreement statistics against examples worked by hand or published with the method."""
from __future__ import annotations

import numpy as np
import pytest

from annotate.agreement import (
    Bootstrap,
    Estimate,
    alpha_estimate,
    alpha_estimates,
    alpha_from_coincidences,
    cohen_kappa_matrix,
    fleiss_estimate,
    fleiss_kappa,
    krippendorff_alpha,
    mean_estimate,
    unit_coincidences,
    value_counts,
)

nan = np.nan
# Krippendorff (2011), "Computing Krippendorff's Alpha-Reliability", the 4 observers x 12 units
# example with missing values; published: nominal .743, ordinal .815, interval .849.
KRIPPENDORFF_2011 = np.array([
    [1, 2, 3, 3, 2, 1, 4, 1, 2, nan, nan, nan],
    [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, nan, 3],
    [nan, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, nan],
    [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, nan],
])


@pytest.mark.parametrize(("level", "published"), [("nominal", 0.743), ("ordinal", 0.815), ("interval", 0.849)])
def test_alpha_matches_the_published_example(level: str, published: float) -> None:
    assert krippendorff_alpha(KRIPPENDORFF_2011, level) == pytest.approx(published, abs=5e-4)


def test_alpha_by_hand_and_missing_data() -> None:
    # Coincidences: o11 = 4, o22 = 2, o12 = o21 = 1; n = 8, n1 = 5, n2 = 3.
    # Do = 2/8, De = 2*5*3/(8*7) = 30/56, alpha = 1 - (1/4)/(30/56) = 8/15.
    two = np.array([[1, 1, 2, 2], [1, 1, 2, 1]], dtype=float)
    assert krippendorff_alpha(two, "nominal") == pytest.approx(8 / 15)
    # a unit only one rater saw says nothing about agreement, and a third rater who shares no
    # unit with anyone changes nothing
    padded = np.array([[1, 1, 2, 2, 2, nan], [1, 1, 2, 1, nan, nan], [nan, nan, nan, nan, nan, 1]])
    assert krippendorff_alpha(padded, "nominal") == pytest.approx(8 / 15)
    assert krippendorff_alpha(np.array([[1, 1], [1, 1]], dtype=float), "nominal") is None
    assert krippendorff_alpha(np.array([[1, nan], [nan, 2]]), "nominal") is None


def test_fleiss_kappa_by_hand() -> None:
    # Units (yes, yes), (no, no), (yes, no): P = (1 + 1 + 0)/3, Pe = .5^2 + .5^2, kappa = 1/3.
    ratings = np.array([[1, 0, 1], [1, 0, 0]], dtype=float)
    assert fleiss_kappa(ratings) == pytest.approx(1 / 3)
    # a unit with a different number of raters is left out, not padded
    with_extra = np.array([[1, 0, 1, 1], [1, 0, 0, 0], [nan, nan, nan, 1]])
    assert fleiss_kappa(with_extra) == pytest.approx(1 / 3)


def test_cohen_kappa_matrix_by_hand() -> None:
    # po = 3/4; pe = .5 * .25 + .5 * .75 = .5; kappa = (.75 - .5)/(1 - .5) = .5
    ratings = np.array([[1, 1, 0, 0, nan], [1, 0, 0, 0, 1], [nan, nan, nan, nan, 1]])
    kappas = cohen_kappa_matrix(ratings, ["a", "b", "c"])
    assert kappas["a"]["b"] == kappas["b"]["a"] == pytest.approx(0.5)
    assert kappas["a"]["c"] is None  # nothing shared
    assert kappas["b"]["c"] is None  # one shared unit is too few
    assert kappas["a"]["a"] == 1.0


def test_no_ratings_give_no_value_rather_than_an_error() -> None:
    # what a database of imported per-summary ratings hands the best-choice statistics
    assert mean_estimate(np.empty((0, 2))) == mean_estimate(np.empty(0)) == Estimate(None)
    assert cohen_kappa_matrix(np.empty((0, 0)), []) == {}
    unrated = cohen_kappa_matrix(np.full((2, 3), nan), ["a", "b"])
    assert unrated == {"a": {"a": 1.0, "b": None}, "b": {"a": None, "b": 1.0}}
    nothing = value_counts(np.full((2, 3), nan))
    assert alpha_estimates(*nothing, ("nominal",))["nominal"] == Estimate(None)
    assert fleiss_estimate(nothing[0]) == Estimate(None)


def test_pairwise_preference_agreement_by_hand() -> None:
    import pandas as pd

    from annotate.report import pairwise_agreement

    # one task of candidates 1, 2, 3; raters a and c choose 1 as best, b chooses 2.
    # {1,2}: a-b disagree, a-c agree, b-c disagree; {1,3}: a-c agree; {2,3}: only b ordered it
    judgements = pd.DataFrame({"task_id": [7, 7, 7], "rater": ["a", "b", "c"], "best": [1, 2, 1], "n_shown": [3, 3, 3]})
    rows = pairwise_agreement(judgements)
    assert sorted(map(tuple, rows.tolist())) == [(0.0, 1.0), (0.0, 1.0), (1.0, 2.0)]
    rate = mean_estimate(rows)
    assert rate.value == 0.5 and rate.units == 3 and 0 <= rate.low <= 0.5 <= rate.high <= 1


@pytest.mark.parametrize("level", ["nominal", "ordinal", "interval"])
def test_fast_alpha_from_unit_coincidences_equals_the_package(level: str) -> None:
    counts, values = value_counts(KRIPPENDORFF_2011)
    fast = alpha_from_coincidences(unit_coincidences(counts, values).sum(axis=0), values, level)
    assert fast == pytest.approx(krippendorff_alpha(KRIPPENDORFF_2011, level), abs=1e-12)


def test_intervals_bracket_the_value_and_narrow_with_data() -> None:
    rng = np.random.default_rng(1)
    truth = rng.integers(1, 8, 400).astype(float)
    noisy = np.where(rng.random(400) < 0.7, truth, rng.integers(1, 8, 400))
    small = alpha_estimate(*value_counts(np.vstack([truth, noisy])[:, :40]), "interval")
    large = alpha_estimate(*value_counts(np.vstack([truth, noisy])), "interval")
    for est in (small, large):
        assert est.low <= est.value <= est.high
    assert large.high - large.low < small.high - small.low
    assert large.units == 400
    yes_no = (np.vstack([truth, noisy]) > 4).astype(float)
    kappa = fleiss_estimate(value_counts(yes_no)[0])
    assert kappa.value == pytest.approx(fleiss_kappa(yes_no))
    assert kappa.low <= kappa.value <= kappa.high


def test_cluster_bootstrap_moves_a_clusters_units_together() -> None:
    # units 0 and 1 form cluster 0, unit 2 is cluster 1: a resample's total is
    # w0 * (row0 + row1) + w1 * row2, worked out here by hand for two resamples.
    plan = Bootstrap(np.array([[1.0, 0.0], [2.0, 1.0]], dtype=np.float32))
    rows = np.array([[1.0, 10.0], [2.0, 20.0], [4.0, 40.0]])
    assert plan.totals(rows, np.array([0, 0, 1])).tolist() == [[3.0, 30.0], [10.0, 100.0]]
    assert plan.totals(rows[:2]).tolist() == [[1.0, 10.0], [4.0, 40.0]]


def test_levels_share_one_resample_and_match_single_estimates() -> None:
    counts, values = value_counts(KRIPPENDORFF_2011)
    both = alpha_estimates(counts, values, ("ordinal", "interval"), rounds=100, seed=3)
    for level in ("ordinal", "interval"):
        single = alpha_estimate(counts, values, level, rounds=100, seed=3)
        assert both[level] == single
        assert both[level].value == pytest.approx(krippendorff_alpha(KRIPPENDORFF_2011, level))
    # clustering the 11 pairable units into 4 groups keeps the value and changes the interval
    grouped = alpha_estimates(counts, values, ("interval",), bootstrap=Bootstrap.draw(4, 100, 3),
                              clusters=np.arange(11) // 3)["interval"]
    assert grouped.value == both["interval"].value
    assert (grouped.low, grouped.high) != (both["interval"].low, both["interval"].high)


def test_quality_alpha_from_the_database_equals_alpha_from_the_file(env, ctx) -> None:  # type: ignore[no-untyped-def]
    """The real TL;DR ratings: 8,585 ratings of 7,713 summaries by 32 raters."""
    import json

    import krippendorff
    from typer.testing import CliRunner

    from annotate.judgement_frames import load_frames
    from annotate.report import reliability
    from app.cli import cli
    from tests.conftest import TLDR

    path = TLDR / "axis_ratings_valid.jsonl"
    result = CliRunner().invoke(cli, ["import", "ratings", str(path), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["raters_added"] == 32

    rows = [json.loads(line) for line in path.read_text().splitlines()]
    # a unit is a summary of a post (texts equal up to surrounding space are one summary)
    workers = sorted({r["worker"] for r in rows})
    units = sorted({(r["post_id"], r["summary"].strip()) for r in rows})
    col = {u: i for i, u in enumerate(units)}
    direct = np.full((len(workers), len(units)), np.nan)
    for r in rows:
        if r["overall"] is not None:
            direct[workers.index(r["worker"]), col[(r["post_id"], r["summary"].strip())]] = r["overall"]

    with ctx.transaction() as db:
        frames = load_frames(db)
    stored = reliability(frames.ratings.merge(frames.judgements[["judgement_id", "rater"]]), "candidate_id", "quality")
    assert len(stored.raters) == 32
    for level in ("ordinal", "interval"):
        from_db = krippendorff_alpha(stored.matrix, level)
        from_file = krippendorff.alpha(reliability_data=direct, level_of_measurement=level)
        assert from_db == pytest.approx(from_file, abs=1e-12)
        assert 0 < from_db < 1
