"""The agreement report on a small set of judgements worked out by hand, and on databases with
nothing to agree on: empty, or imported per-summary ratings only."""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from annotate.judgement_frames import Filters, load_frames
from annotate.report import RATER_MISSING, SOURCE_MISSING, build_report, flagged, per_rater, position_bias
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


def _calibra(*args: str) -> tuple[int, str]:
    from typer.testing import CliRunner

    from app.cli import cli

    result = CliRunner().invoke(cli, list(args))
    return result.exit_code, result.output


def unexplained(data: dict[str, Any]) -> dict[str, list[str]]:
    """The statistics of a report (as JSON) that are null without a reason in `missing`, or have a
    reason without being null; per object. Empty for a well-formed report."""
    def null(value: Any) -> bool:
        return value is None or value == [] or (isinstance(value, dict) and value.get("value", 0) is None)

    overall = data["overall"]
    kappas = [k for a, row in overall["cohen_kappa_best"].items() for b, k in row.items() if a != b]
    objects = {"overall": (overall, {k: null(v) for k, v in overall.items() if isinstance(v, dict) and "value" in v}
                           | {"cohen_kappa_best": all(k is None for k in kappas)})}
    objects |= {f"rater {r['rater']}": (r, {k: null(r[k]) for k in RATER_MISSING}) for r in data["raters"]}
    objects |= {f"source {s['source']}": (s, {k: null(s[k]) for k in SOURCE_MISSING})
                for s in data["models"]["sources"]}
    wrong = {name: sorted(k for k, is_null in stats.items() if is_null != (k in obj["missing"]))
             for name, (obj, stats) in objects.items()}
    return {name: keys for name, keys in wrong.items() if keys}


ESTIMATES = ["best_alpha_nominal", "pairwise_agreement", "quality_alpha_ordinal", "quality_alpha_interval",
             "factual_alpha_nominal", "factual_fleiss_kappa"]


def test_agreement_command_on_an_empty_database(env) -> None:  # type: ignore[no-untyped-def]
    code, out = _calibra("agreement", "--json", "--bootstrap", "20")
    assert code == 0, out
    data = json.loads(out)
    assert data["overall"]["missing"] == {name: "no judgements" for name in [*ESTIMATES, "cohen_kappa_best"]}
    assert all(data["overall"][name]["value"] is None for name in ESTIMATES)
    assert data["raters"] == [] and data["models"]["sources"] == [] and data["models"]["by_round"] == []
    code, text = _calibra("agreement", "--bootstrap", "20")
    assert code == 0, text
    assert "0 judgements by 0 raters" in text and "pairwise_agreement" in text and "missing: no judgements" in text


def test_agreement_command_on_imported_ratings_only(env: Path) -> None:
    # two raters score the same six summaries alike: quality agreement, and nothing else to go on
    ratings = [{"post_id": "t3_x", "summary_id": i, "summary": f"summary {i}", "worker": w, "overall": 1 + i}
               for i in range(6) for w in ("w1", "w2")]
    (env / "ratings.jsonl").write_text("".join(json.dumps(r) + "\n" for r in ratings))
    code, out = _calibra("import", "ratings", str(env / "ratings.jsonl"))
    assert code == 0, out
    code, out = _calibra("agreement", "--json", "--bootstrap", "20")
    assert code == 0, out
    data = json.loads(out)
    overall = data["overall"]
    assert overall["judgements"] == 4 and overall["raters"] == 2
    assert overall["missing"] == {"best_alpha_nominal": "no best choices", "pairwise_agreement": "no best choices",
                                  "factual_alpha_nominal": "no factual ratings",
                                  "factual_fleiss_kappa": "no factual ratings", "cohen_kappa_best": "no best choices"}
    assert overall["quality_alpha_interval"]["value"] == pytest.approx(1.0)
    assert overall["quality_alpha_interval"]["units"] == 6
    raters = {r["rater"]: r for r in data["raters"]}
    assert raters["w1"]["quality_mean"] == 3.5 and raters["w1"]["majority_agreement"] is None
    assert raters["w1"]["missing"]["majority_agreement"] == "no shared tasks"
    assert raters["w1"]["missing"]["median_seconds"] == "no time recorded"  # imported: no time taken
    (source,) = data["models"]["sources"]
    assert source["mean_quality"] == 3.5 and source["missing"]["win_rate"] == "no comparisons with another source"
    assert unexplained(data) == {}
    code, text = _calibra("agreement", "--bootstrap", "20")
    assert code == 0, text
    assert re.search(r"best_alpha_nominal +missing: no best choices", text)
    assert re.search(r"quality_alpha_interval +1\.000", text)
    assert "majority agreement no shared tasks" in text


def test_missing_statistics_name_their_reason(judged) -> None:  # type: ignore[no-untyped-def]
    with judged.transaction() as db:
        everything = json.loads(json.dumps(build_report(load_frames(db), rounds=20).as_dict()))
        one_rater = json.loads(json.dumps(build_report(load_frames(db, Filters(rater="r1")), rounds=20).as_dict()))
    assert everything["overall"]["missing"] == {} and unexplained(everything) == {}
    assert everything["raters"][0]["missing"] == {"gold_accuracy": "no gold tasks judged"}
    # a rater alone: nobody to agree with, but their own position bias and quality still count
    assert one_rater["overall"]["missing"] == {
        name: "no task has best choices from two or more raters"
        for name in ("best_alpha_nominal", "pairwise_agreement", "cohen_kappa_best")} | {
        name: "no summary has quality ratings from two or more raters"
        for name in ("quality_alpha_ordinal", "quality_alpha_interval")} | {
        name: "no summary has factual ratings from two or more raters"
        for name in ("factual_alpha_nominal", "factual_fleiss_kappa")}
    (r1,) = one_rater["raters"]
    assert r1["position_bias_p"] == pytest.approx(1.0) and r1["missing"]["majority_agreement"] == "no shared tasks"
    assert unexplained(one_rater) == {}


def test_win_rates_per_round_leave_out_tasks_of_no_round(judged) -> None:  # type: ignore[no-untyped-def]
    from sqlalchemy import update

    from db import ComparisonTask

    with judged.transaction() as db:
        db.execute(update(ComparisonTask).where(ComparisonTask.round == 1).values(round=None))
        models = build_report(load_frames(db), rounds=20).models
    assert {row["round"] for row in models["by_round"]} == {2}
    # the tasks of no round still count in the win rates over all tasks
    assert {s["source"]: s["comparisons"] for s in models["sources"]}["alpha"] == 64
