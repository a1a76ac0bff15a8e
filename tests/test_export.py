"""Preference export on the hand-worked judgements of test_report, and its round trip."""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from annotate.export import ExportConfig, judgements_table, preference_pairs
from app.cli import cli

runner = CliRunner()


def test_pairs_by_hand(judged) -> None:  # type: ignore[no-untyped-def]
    with judged.transaction() as db:
        pairs, left_out = preference_pairs(db, ExportConfig(margin="quality"))
    # r3 (flagged) is left out; r1 and r2 choose alpha over beta and the reference in all 12
    # tasks, and their quality gap of 2 orders the reference (5) over beta (3)
    assert left_out["flagged_raters"] == 1 and left_out["ties"] == 0
    assert len(pairs) == 36
    by_sources = pairs.groupby(["chosen_source", "rejected_source"]).size().to_dict()
    assert by_sources == {("alpha", "beta"): 12, ("alpha", "human reference"): 12, ("human reference", "beta"): 12}
    assert (pairs.soft_label == 1.0).all() and (pairs.weight == 1.0).all()
    margins = pairs.groupby(["chosen_source", "rejected_source"]).margin.first().to_dict()
    assert margins == {("alpha", "beta"): 3.0, ("alpha", "human reference"): 1.0, ("human reference", "beta"): 2.0}
    assert pairs.prompt.str.startswith("POST: post ").all()
    assert set(pairs["round"]) == {1, 2} and all(list(r) == ["r1", "r2"] for r in pairs.raters)


def test_flagged_raters_can_be_kept(judged) -> None:  # type: ignore[no-untyped-def]
    with judged.transaction() as db:
        pairs, left_out = preference_pairs(db, ExportConfig(exclude_flagged=False))
    ab = pairs[(pairs.chosen_source == "alpha") & (pairs.rejected_source == "beta")]
    # where r3 chose beta (4 tasks) alpha wins 2 votes to 1
    assert sorted(ab.soft_label.round(4)) == [round(2 / 3, 4)] * 4 + [1.0] * 8
    assert left_out["flagged_raters"] == 0 and (ab.weight < 1).any()


def test_judgements_keep_their_provenance(judged) -> None:  # type: ignore[no-untyped-def]
    with judged.transaction() as db:
        table = judgements_table(db)
    assert len(table) == 36
    row = table.iloc[0]
    assert row.best_candidate_id in row.display_order and len(row.display_sources) == 3
    assert {r["quality"] for r in row.ratings} == {6, 3, 5}


@pytest.mark.parametrize("fmt", ["jsonl", "parquet", "hf-dataset"])
def test_export_command_round_trips_through_import(judged, env: Path, monkeypatch, fmt: str) -> None:  # type: ignore[no-untyped-def]
    out = env / f"prefs.{fmt}"
    result = runner.invoke(cli, ["export", "preferences", "--format", fmt, "--out", str(out), "--margin", "quality"])
    assert result.exit_code == 0, result.output
    assert "36 pairs written" in result.stdout and "1 flagged raters" in result.stdout
    if fmt == "jsonl":
        rows = pd.read_json(out, lines=True)
    elif fmt == "parquet":
        rows = pd.read_parquet(out)
    else:
        import datasets

        rows = datasets.load_from_disk(str(out)).to_pandas()
    assert {"prompt", "chosen", "rejected", "margin", "weight", "round", "raters", "chosen_candidate_id"} <= set(rows)
    if fmt != "jsonl":
        return
    # the trainer's input format: `calibra import documents` reads it back as pairs
    monkeypatch.setenv("CALIBRA_HOME", str(env / "elsewhere"))
    imported = runner.invoke(cli, ["import", "documents", str(out), "--json"])
    assert imported.exit_code == 0, imported.output
    assert json.loads(imported.stdout)["judgements_added"] == 36
    again = env / "again.jsonl"
    assert runner.invoke(cli, ["export", "preferences", "--out", str(again)]).exit_code == 0
    triples = lambda f: set(pd.read_json(f, lines=True)[["prompt", "chosen", "rejected"]].itertuples(index=False))  # noqa: E731
    assert triples(again) == triples(out)


def test_judgements_command(judged, env: Path) -> None:  # type: ignore[no-untyped-def]
    out = env / "j.jsonl"
    result = runner.invoke(cli, ["export", "judgements", "--out", str(out)])
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 36 and {"rater", "display_order", "display_sources", "seconds", "ratings"} <= set(rows[0])
    bad = runner.invoke(cli, ["export", "preferences", "--out", str(out), "--margin", "huge"])
    assert bad.exit_code == 2 and "margin must be one of" in bad.output


@pytest.mark.parametrize("kind", ["judgements", "preferences"])
def test_exports_of_an_empty_database_write_empty_files(ctx, env: Path, kind: str) -> None:  # type: ignore[no-untyped-def]
    out = env / f"{kind}.jsonl"
    result = runner.invoke(cli, ["export", kind, "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert out.read_text() == "" and result.output.startswith("0 ")
