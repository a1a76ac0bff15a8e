"""The admin dashboard: the agreement report as tables, plots and CSV downloads.

Every number comes from `annotate.report`; this module lays it out (tables, plots, CSV files).
The tab is shown to admins only, and its handler goes through the shared admin guard, since a
hidden tab is not a locked one. With nothing to report (a fresh install, or filters that match
no judgement) it says what the database holds and how judgements get in, instead of failing.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from datetime import datetime
from pathlib import Path
from typing import Any

import gradio as gr
import pandas as pd
import plotly.express as px
import plotly.graph_objects as go

from annotate.csv_safety import csv_text
from annotate.judgement_frames import Filters, Frames, load_frames
from annotate.report import agreement_by_round, build_report, flagged
from annotate.status import counts
from annotate.submissions import LETTERS
from app.admin_guard import AdminEvents

ESTIMATES = ("best_alpha_nominal", "pairwise_agreement", "quality_alpha_ordinal", "quality_alpha_interval",
             "factual_alpha_nominal", "factual_fleiss_kappa")
DAY_MS = 86_400_000  # plotly measures date axes in milliseconds

GETTING_JUDGEMENTS = """Judgements come from:

- annotating in the **Annotate** tab;
- `calibra import documents FILE` with a comparisons file (`post_id`, `post`, `summary_0`, `summary_1`, \
`choice`, `worker`): each comparison becomes a judgement by its worker;
- `calibra simulate --judge length`: simulated raters answer the open tasks, to try the training loop \
(their judgements are left out of this dashboard).

Then press Compute again."""


def _day(value: str | None, name: str) -> datetime | None:
    if not value or not value.strip():
        return None
    try:
        return datetime.fromisoformat(value.strip())
    except ValueError:
        raise gr.Error(f"{name}: {value!r} is not a date (YYYY-MM-DD)") from None


def parse_filters(round_: str | None, rater: str | None, since: str | None, until: str | None,
                  simulated: bool = False) -> Filters:
    if round_ and round_.strip() and not round_.strip().isdigit():
        raise gr.Error(f"round: {round_!r} is not a round number")
    if not isinstance(simulated, bool):
        raise gr.Error("simulated: must be true or false")
    return Filters(round=int(round_) if round_ and round_.strip() else None, rater=(rater or "").strip() or None,
                   since=_day(since, "since"), until=_day(until, "until"), include_simulated=simulated)


def describe_filters(filters: Filters) -> str:
    """The filters given, as the dashboard's fields name them; empty if none."""
    given = [f"round {filters.round}" if filters.round is not None else "",
             f"rater {filters.rater!r}" if filters.rater is not None else "",
             f"from {filters.since:%Y-%m-%d}" if filters.since is not None else "",
             f"until {filters.until:%Y-%m-%d}" if filters.until is not None else ""]
    return ", ".join(g for g in given if g)


def empty_state(held: dict[str, int], filters: Filters) -> str:
    """What to show instead of a report when no judgement is left to report on: what the
    database holds (`annotate.status.counts`) and how judgements get in."""
    if held["judgements"] == 0:
        return (f"**No judgements yet.** The database holds {held['documents']} documents, {held['tasks']} "
                f"comparison tasks and no judgements.\n\n{GETTING_JUDGEMENTS}")
    named = describe_filters(filters)
    if named:
        return (f"**No judgements match these filters** ({named}). The database holds {held['judgements']} "
                "judgements in all; widen or clear the filters to see them.")
    return (f"**No judgements by human raters yet.** The {held['judgements']} judgements so far are all simulated "
            f"raters', which this dashboard leaves out unless *Include simulated raters* is ticked.\n\n"
            f"{GETTING_JUDGEMENTS}")


def _explained(frame: pd.DataFrame, reasons: list[dict[str, str]]) -> pd.DataFrame:
    """`frame` rounded, with the cell of each missing statistic saying why it is missing (row i's
    reasons are `reasons[i]`, the report's `missing`) rather than left blank."""
    out = frame.round(3).astype(object)
    for i, row in enumerate(reasons):
        for column, why in row.items():
            if column in out.columns:
                out.at[i, column] = why
    return out


def overall_table(report: dict[str, Any]) -> pd.DataFrame:
    overall = report["overall"]
    rows = [{"question": k, "value": overall[k]["value"], "95% low": overall[k]["low"],
             "95% high": overall[k]["high"], "units": overall[k]["units"]} for k in ESTIMATES]
    return _explained(pd.DataFrame(rows), [{"value": overall["missing"][k]} if k in overall["missing"] else {}
                                           for k in ESTIMATES])


def raters_table(report: dict[str, Any]) -> pd.DataFrame:
    frame = pd.DataFrame(report["raters"])
    if frame.empty:
        return pd.DataFrame({"rater": []})  # a header, where Gradio would number the columns of none
    frame["best_position_shares"] = frame["best_position_shares"].map(lambda s: " / ".join(f"{x:.2f}" for x in s))
    frame["flags"] = frame["flags"].map(", ".join)  # not frame.flags: that is pandas' own attribute
    return _explained(frame.drop(columns="missing"), [r["missing"] for r in report["raters"]])


def models_table(report: dict[str, Any]) -> pd.DataFrame:
    sources = report["models"]["sources"]
    frame = pd.DataFrame(sources)
    if frame.empty:
        return pd.DataFrame({"source": []})
    return _explained(frame.drop(columns="missing"), [s["missing"] for s in sources])


def empty_plot(title: str, message: str) -> go.Figure:
    """A plot with nothing to draw: its title, and a short message where the data would be."""
    figure = go.Figure()
    figure.update_layout(title=title, xaxis_visible=False, yaxis_visible=False, plot_bgcolor="rgba(0,0,0,0)",
                         annotations=[{"text": message, "showarrow": False, "xref": "paper", "yref": "paper",
                                       "x": 0.5, "y": 0.5, "font": {"size": 15}}])
    return figure


def _why_empty(report: dict[str, Any], otherwise: str) -> str:
    return "No judgements" if report["overall"]["judgements"] == 0 else otherwise


def position_plot(report: dict[str, Any]) -> go.Figure:
    title = "Position bias per rater"
    rows = [{"rater": r["rater"], "position": LETTERS[i], "share of best votes": share}
            for r in report["raters"] for i, share in enumerate(r["best_position_shares"])]
    if not rows:
        return empty_plot(title, _why_empty(report, "No best choices"))
    return px.bar(pd.DataFrame(rows), x="rater", y="share of best votes", color="position", barmode="group",
                  title=title)


def kappa_plot(report: dict[str, Any]) -> go.Figure:
    title = "Cohen's κ on the best choice, per pair of raters"
    why = report["overall"]["missing"].get("cohen_kappa_best")
    if why:
        return empty_plot(title, why[:1].upper() + why[1:])
    kappa = pd.DataFrame(report["overall"]["cohen_kappa_best"]).sort_index().sort_index(axis=1)
    return px.imshow(kappa.astype(float), zmin=-1, zmax=1, color_continuous_scale="RdBu", title=title)


def win_rate_plot(report: dict[str, Any]) -> go.Figure:
    title = "Win rate per round"
    frame = pd.DataFrame(report["models"]["by_round"], columns=["round", "source", "win_rate", "comparisons"])
    if frame.empty:
        return empty_plot(title, _why_empty(report, "No comparisons between sources in tasks of a round"))
    figure = px.line(frame, x="round", y="win_rate", color="source", markers=True, title=title)
    return figure.update_xaxes(dtick=1)


def agreement_plot(frames: Frames) -> go.Figure:
    title = "Pairwise preference agreement per round"
    per_round = agreement_by_round(frames.judgements)
    if per_round.empty:
        return empty_plot(title, "No judgements" if frames.judgements.empty
                          else "No task of a round has best choices from two or more raters")
    figure = px.line(per_round, x="round", y="pairwise agreement", markers=True, title=title)
    return figure.update_xaxes(dtick=1)


def throughput_plot(frames: Frames) -> go.Figure:
    title = "Judgements per day"
    if frames.judgements.empty:
        return empty_plot(title, "No judgements")
    per_day = frames.judgements.created_at.dt.floor("D").value_counts().sort_index()
    per_day = per_day.rename_axis("day").reset_index(name="judgements")
    figure = px.bar(per_day, x="day", y="judgements", title=title)
    # A bar on a date axis is as wide as the smallest gap between bars, in milliseconds; with a
    # single day there is no gap, so plotly draws a bar about a millisecond wide and zooms in on
    # it (ticks 0.2 ms apart). So: day-wide bars, half a day either side, and a tick per day for a
    # span of two weeks or less.
    first, last = per_day.day.min(), per_day.day.max()
    half = pd.Timedelta(hours=12)
    figure.update_traces(width=0.8 * DAY_MS)
    figure.update_xaxes(type="date", tickformat="%Y-%m-%d", range=[first - half, last + half],
                        dtick=DAY_MS if last - first <= pd.Timedelta(days=14) else None)
    return figure


def write_csvs(tables: dict[str, pd.DataFrame], cache: Path) -> list[str]:
    """The tables as CSV files, text cells escaped against formula injection (`csv_safety`).

    They are written into Gradio's cache (`cache`), in a folder named by their content: Gradio
    serves a file already in its cache as it is instead of copying it, and removes it with the
    rest of its cache (the app's `delete_cache`), and the same report computed again reuses its
    files rather than adding new ones.
    """
    texts = {f"{name}.csv": csv_text(table) for name, table in tables.items()}
    folder = cache / f"dashboard-{hashlib.sha256(json.dumps(texts).encode()).hexdigest()[:32]}"
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in texts.items():
        if not (folder / name).exists():
            # written aside and renamed into place: a concurrent compute of the same report
            # never hands out a half-written file
            with tempfile.NamedTemporaryFile("w", dir=folder, suffix=".part", delete=False, newline="") as part:
                part.write(text)
            os.replace(part.name, folder / name)
    return [str(folder / name) for name in texts]


def compute(transaction: Any, filters: Filters, cache: Path, bootstrap: int = 200) -> list[Any]:
    with transaction() as db:
        frames = load_frames(db, filters)
        held = counts(db) if frames.judgements.empty else None
    report = build_report(frames, rounds=bootstrap).as_dict()
    tables = {"agreement": overall_table(report), "raters": raters_table(report), "models": models_table(report)}
    if held is not None:
        summary = empty_state(held, filters)
    else:
        summary = (f"**{report['overall']['judgements']}** judgements by **{report['overall']['raters']}** raters; "
                   f"flagged: {', '.join(sorted(flagged(report['raters']))) or 'none'}"
                   + ("  \n*Simulated raters (sim-…) included: their judgements are not people's.*"
                      if filters.include_simulated else ""))
    return [summary, *tables.values(), position_plot(report), kappa_plot(report), win_rate_plot(report),
            agreement_plot(frames), throughput_plot(frames), None if held is not None else write_csvs(tables, cache)]


def build_dashboard(events: AdminEvents, transaction: Any) -> gr.Tab:
    """The admin tab; its handler goes through `events`, which checks the role on the server."""
    with gr.Tab("Dashboard", visible=False, elem_id="dashboard-tab") as tab:
        with gr.Row():
            round_ = gr.Textbox(label="Round", placeholder="all", elem_id="filter-round")
            rater = gr.Textbox(label="Rater", placeholder="all", elem_id="filter-rater")
            since = gr.Textbox(label="From (YYYY-MM-DD)", elem_id="filter-since")
            until = gr.Textbox(label="Until (YYYY-MM-DD)", elem_id="filter-until")
            simulated = gr.Checkbox(label="Include simulated raters", elem_id="filter-simulated")
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

        def on_compute(admin: str, r: str, who: str, s: str, u: str, sim: bool) -> list[Any]:
            return compute(transaction, parse_filters(r, who, s, u, sim), Path(downloads.GRADIO_CACHE))

        events.on(run.click, on_compute, [round_, rater, since, until, simulated],
                  [summary, agreement, raters, models, position, kappa, wins, agree, throughput, downloads])
    return tab
