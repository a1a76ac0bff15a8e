"""The agreement report on a small set of judgements worked out by hand."""
from __future__ import annotations

import json

import pytest

from annotate.judgement_frames import Filters, load_frames
from annotate.report import build_report, flagged, per_rater, position_bias
from tests.conftest import QUALITY


def test_report_by_hand(judged) -> None:  # type: ignore[no-untyped-def]
    with judged.transaction() as db:
        frames = load_frames(db)
    report = build_report(frames, rounds=50)
    data = json.loads(json.dumps(report.as_dict()))  # plain JSON all the way down

    raters = {r["rater"]: r for r in data["raters"]}
    assert raters["r3"]["best_position_shares"] == [1.0, 0.0, 0.0]
    assert raters["r3"]["position_bias_p"] < 1e-4
    assert raters["r1"]["position_bias_p"] == pytest.approx(1.0)  # alpha first, second, third equally often
    # r3 agrees with the others' majority (alpha) only when alpha was shown first: 4 of 12
    assert raters["r3"]["majority_agreement"] == pytest.approx(4 / 12)
    # r1's others are r2 (alpha) and r3; when r3 did not choose alpha they are split: no majority
    assert raters["r1"]["majority_agreement"] == 1.0
    assert raters["r1"]["longer_wins"] == 1.0 and raters["r1"]["median_seconds"] == 10.0
    assert set(raters["r3"]["flags"]) == {"position bias", "low majority agreement"} and raters["r1"]["flags"] == []
    assert flagged(per_rater(frames)) == {"r3"}

    models = {m["source"]: m for m in data["models"]["sources"]}
    # alpha beats beta 12 + 12 + 4 times and loses 4 times (r3 choosing beta); same against the reference
    assert data["models"]["win_rate_matrix"]["alpha"]["beta"] == 28 / 32
    assert data["models"]["win_rate_matrix"]["alpha"]["human reference"] == 28 / 32
    assert data["models"]["win_rate_matrix"]["beta"]["human reference"] == 0.5
    assert models["alpha"]["win_rate"] == 56 / 64
    assert models["alpha"]["bt_strength"] > models["human reference"]["bt_strength"] == pytest.approx(
        models["beta"]["bt_strength"], abs=1e-6)
    assert models["alpha"]["bt_low"] <= models["alpha"]["bt_strength"] <= models["alpha"]["bt_high"]
    assert models["alpha"]["mean_quality"] == 6.0 and models["beta"]["factual_rate"] == 0.0
    assert {(r["round"], r["source"]) for r in data["models"]["by_round"]} == {
        (rnd, s) for rnd in (1, 2) for s in QUALITY}

    overall = data["overall"]
    # every rater gave every summary the same quality: perfect quality agreement
    assert overall["quality_alpha_interval"]["value"] == pytest.approx(1.0)
    assert overall["factual_fleiss_kappa"]["value"] == pytest.approx(1.0)
    # r1-r2 agree on all 12 tasks; r3 agrees with them 4 times
    assert overall["cohen_kappa_best"]["r1"]["r2"] == 1.0
    # pairs: r1, r2 order (alpha, x) alike: 2 pairs x 12 tasks; with r3, agreement only when r3 chose alpha
    assert 0 < overall["pairwise_agreement"]["value"] < 1


def test_filters_and_position_bias_edge_cases(judged) -> None:  # type: ignore[no-untyped-def]
    with judged.transaction() as db:
        only_r3 = load_frames(db, Filters(rater="r3"))
        round_two = load_frames(db, Filters(round=2))
    assert set(only_r3.judgements.rater) == {"r3"} and len(only_r3.judgements) == 12
    assert len(round_two.judgements) == 18 and set(round_two.judgements["round"]) == {2}
    assert position_bias(only_r3.judgements.iloc[:0]) == ([], None)


def test_agreement_command(judged, env) -> None:  # type: ignore[no-untyped-def]
    from typer.testing import CliRunner

    from app.cli import cli

    runner = CliRunner()
    result = runner.invoke(cli, ["agreement", "--json", "--bootstrap", "20"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert set(data) == {"overall", "raters", "models", "filters"}
    assert data["overall"]["judgements"] == 36
    r2 = runner.invoke(cli, ["agreement", "--round", "2", "--json", "--bootstrap", "20"])
    assert json.loads(r2.stdout)["overall"]["judgements"] == 18
    text = runner.invoke(cli, ["agreement", "--bootstrap", "20"])
    assert "r3" in text.stdout and "position bias" in text.stdout
    bad = runner.invoke(cli, ["agreement", "--since", "yesterday"])
    assert bad.exit_code == 2 and "--since" in bad.output
