"""The admin dashboard: the agreement report as tables, plots and CSV downloads.

Every number comes from `annotate.report`; this module lays it out (tables, plots, CSV files).
The tab is shown to admins only, and its handler goes through the shared admin guard, since a
hidden tab is not a locked one.
"""
from __future__ import annotations

import tempfile
from datetime import datetime
from pathlib import Path
from typing import Any

import gradio as gr
import pandas as pd
import plotly.express as px
import plotly.graph_objects as go

from annotate.judgement_frames import Filters, load_frames
from annotate.report import agreement_by_round, build_report, flagged
from annotate.submissions import LETTERS
from app.admin_guard import AdminEvents

ESTIMATES = ("best_alpha_nominal", "pairwise_agreement", "quality_alpha_ordinal", "quality_alpha_interval",
             "factual_alpha_nominal", "factual_fleiss_kappa")


def _day(value: str | None, name: str) -> datetime | None:
    if not value or not value.strip():
        return None
    try:
        return datetime.fromisoformat(value.strip())
    except ValueError:
        raise gr.Error(f"{name}: {value!r} is not a date (YYYY-MM-DD)") from None


def parse_filters(round_: str | None, rater: str | None, since: str | None, until: str | None) -> Filters:
    if round_ and round_.strip() and not round_.strip().isdigit():
        raise gr.Error(f"round: {round_!r} is not a round number")
    return Filters(round=int(round_) if round_ and round_.strip() else None, rater=(rater or "").strip() or None,
                   since=_day(since, "since"), until=_day(until, "until"))


def overall_table(report: dict[str, Any]) -> pd.DataFrame:
    rows = [{"question": k, "value": report["overall"][k]["value"], "95% low": report["overall"][k]["low"],
             "95% high": report["overall"][k]["high"], "units": report["overall"][k]["units"]} for k in ESTIMATES]
    return pd.DataFrame(rows).round(3)


def raters_table(report: dict[str, Any]) -> pd.DataFrame:
    frame = pd.DataFrame(report["raters"])
    if frame.empty:
        return frame
    frame["best_position_shares"] = frame["best_position_shares"].map(lambda s: " / ".join(f"{x:.2f}" for x in s))
    frame["flags"] = frame["flags"].map(", ".join)  # not frame.flags: that is pandas' own attribute
    return frame.round(3)


def models_table(report: dict[str, Any]) -> pd.DataFrame:
    return pd.DataFrame(report["models"]["sources"]).round(3)


def position_plot(report: dict[str, Any]) -> go.Figure:
    rows = [{"rater": r["rater"], "position": LETTERS[i], "share of best votes": share}
            for r in report["raters"] for i, share in enumerate(r["best_position_shares"])]
    return px.bar(pd.DataFrame(rows, columns=["rater", "position", "share of best votes"]), x="rater",
                  y="share of best votes", color="position", barmode="group", title="Position bias per rater")


def kappa_plot(report: dict[str, Any]) -> go.Figure:
    kappa = pd.DataFrame(report["overall"]["cohen_kappa_best"]).sort_index().sort_index(axis=1)
    return px.imshow(kappa.astype(float), zmin=-1, zmax=1, color_continuous_scale="RdBu",
                     title="Cohen's κ on the best choice, per pair of raters")


def win_rate_plot(report: dict[str, Any]) -> go.Figure:
    frame = pd.DataFrame(report["models"]["by_round"], columns=["round", "source", "win_rate", "comparisons"])
    return px.line(frame.fillna({"round": -1}), x="round", y="win_rate", color="source", markers=True,
                   title="Win rate per round (round -1: none)")


def agreement_plot(frames: Any) -> go.Figure:
    return px.line(agreement_by_round(frames.judgements), x="round", y="pairwise agreement", markers=True,
                   title="Pairwise preference agreement per round")


def throughput_plot(frames: Any) -> go.Figure:
    per_day = frames.judgements.groupby(frames.judgements.created_at.dt.date).size().rename("judgements").reset_index()
    return px.bar(per_day, x="created_at", y="judgements", title="Judgements per day")


def write_csvs(tables: dict[str, pd.DataFrame]) -> list[str]:
    folder = Path(tempfile.mkdtemp(prefix="calibra-dashboard-"))
    paths = []
    for name, table in tables.items():
        path = folder / f"{name}.csv"
        table.to_csv(path, index=False)
        paths.append(str(path))
    return paths


def compute(sessions_transaction: Any, filters: Filters, bootstrap: int = 200) -> list[Any]:
    with sessions_transaction() as db:
        frames = load_frames(db, filters)
    if frames.judgements.empty:
        raise gr.Error("No judgements match these filters.")
    report = build_report(frames, rounds=bootstrap).as_dict()
    tables = {"agreement": overall_table(report), "raters": raters_table(report), "models": models_table(report)}
    summary = (f"**{report['overall']['judgements']}** judgements by **{report['overall']['raters']}** raters; "
               f"flagged: {', '.join(sorted(flagged(report['raters']))) or 'none'}")
    return [summary, *tables.values(), position_plot(report), kappa_plot(report), win_rate_plot(report),
            agreement_plot(frames), throughput_plot(frames), write_csvs(tables)]


def build_dashboard(events: AdminEvents, transaction: Any) -> gr.Tab:
    """The admin tab; its handler goes through `events`, which checks the role on the server."""
    with gr.Tab("Dashboard", visible=False, elem_id="dashboard-tab") as tab:
        with gr.Row():
            round_ = gr.Textbox(label="Round", placeholder="all", elem_id="filter-round")
            rater = gr.Textbox(label="Rater", placeholder="all", elem_id="filter-rater")
            since = gr.Textbox(label="From (YYYY-MM-DD)", elem_id="filter-since")
            until = gr.Textbox(label="Until (YYYY-MM-DD)", elem_id="filter-until")
            run = gr.Button("Compute", variant="primary", elem_id="dashboard-compute")
        summary = gr.Markdown(elem_id="dashboard-summary")
        agreement = gr.Dataframe(label="Agreement per question (95% bootstrap intervals)", elem_id="agreement-table")
        raters = gr.Dataframe(label="Raters", elem_id="raters-table")
        models = gr.Dataframe(label="Model versions (admins only)", elem_id="models-table")
        with gr.Row():
            position = gr.Plot(label="Position bias")
            kappa = gr.Plot(label="κ heatmap")
        with gr.Row():
            wins = gr.Plot(label="Win rates per round")
            agree = gr.Plot(label="Agreement per round")
        throughput = gr.Plot(label="Throughput")
        downloads = gr.File(label="CSV downloads", file_count="multiple", elem_id="dashboard-csv")

        def on_compute(admin: str, r: str, who: str, s: str, u: str) -> list[Any]:
            return compute(transaction, parse_filters(r, who, s, u))

        events.on(run.click, on_compute, [round_, rater, since, until],
                  [summary, agreement, raters, models, position, kappa, wins, agree, throughput, downloads])
    return tab
