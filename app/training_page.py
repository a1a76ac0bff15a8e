"""The admins' Training tab: run or cancel a round, watch it live, read the history and the
figures across rounds, promote or roll back policy versions, and set the schedule.

Every handler is registered through `AdminEvents`, so each one checks the admin role on the
server; each calls one domain function and lays out what it returns.
"""
from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import gradio as gr
import pandas as pd
import plotly.express as px
import plotly.graph_objects as go

from annotate.errors import InvalidInput
from annotate.judgement_frames import Filters, load_frames
from annotate.report import agreement_by_round
from annotate.review import VERDICTS, review_items, settle
from app.admin_guard import AdminEvents
from db.engine import Transactions
from db.models import ModelKind
from training.errors import UsageError
from training.registry import list_versions, promote, registry_events, resolve_version, rollback
from training.rounds.config import JUDGES, MODES, RoundOptions
from training.rounds.hacking import acknowledge
from training.rounds.overview import alarm_text, history, live_progress, trends
from training.rounds.schedule import current_schedule, set_schedule
from training.rounds.store import cancel_round, request_round

NO_ROUNDS = ("No rounds yet. Run one with **Run a round now** (round 0 fine-tunes the policy on the human "
             "reference summaries), or wait for the schedule.")
HISTORY_COLUMNS = ["round", "status", "requested_by", "started_at", "minutes", "judgements", "pairs", "judgement_ids",
                   "reward_accuracy", "ranker_accuracy", "promoted", "new_policy", "decision", "reward_hacking",
                   "disagreement_reviews", "reason"]
VERSION_COLUMNS = ["id", "kind", "name", "status", "round", "parent", "snapshot", "config", "metrics"]


@contextmanager
def shown_to_admin() -> Iterator[None]:
    """A refusal from the domain (a round already open, a bad schedule, an unknown item) shown
    as it is, naming the field where there is one."""
    try:
        yield
    except UsageError as exc:
        raise gr.Error(str(exc)) from None
    except InvalidInput as exc:
        raise gr.Error(f"{exc.field}: {exc.message}" if exc.field else exc.message) from None


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes} min {secs:02d} s" if minutes else f"{secs} s"


def progress_text(live: dict[str, Any] | None) -> str:
    if live is None:
        return "No round is running."
    head = f"**Round {live['round']}** · {live['status']}"
    if live["cancel_requested"]:
        head += " · cancelling"
    if live["stage"] is None:
        done = ", ".join(live["stages_done"]) or "none"
        return f"{head} · waiting for a worker (stages done: {done})" if live["status"] == "requested" \
            else f"{head} · between stages (done: {done})"
    step = f"step {live['step']} of {live['total']}" if live["total"] else "starting"
    loss = f" · loss {live['loss']:.3f}" if live["loss"] is not None else ""
    return (f"{head} · stage **{live['stage']}** · {step}{loss} · elapsed {_duration(live['elapsed_s'])} "
            f"(stage {_duration(live['stage_elapsed_s'])}) · ETA of the stage {_duration(live['eta_s'])}")


def _line(frame: pd.DataFrame, x: str, y: str, color: str | None, title: str, empty: str,
          band: tuple[str, str] | None = None) -> go.Figure:
    if frame.empty:
        figure = go.Figure()
        figure.update_layout(title=title, annotations=[{"text": empty, "showarrow": False, "x": 0.5, "y": 0.5,
                                                        "xref": "paper", "yref": "paper"}])
        return figure
    bars = {} if band is None else {"error_y": frame[band[1]] - frame[y], "error_y_minus": frame[y] - frame[band[0]]}
    figure = px.line(frame, x=x, y=y, color=color, markers=True, title=title, **bars)
    figure.update_xaxes(dtick=1)
    return figure


def trend_plots(data: dict[str, list[dict[str, Any]]], agreement: pd.DataFrame) -> list[go.Figure]:
    accuracy = pd.DataFrame(data["judge_accuracy"], columns=["round", "judge", "test set", "accuracy"])
    accuracy["series"] = accuracy["judge"] + " · " + accuracy["test set"]
    wins = pd.DataFrame(data["win_rate"], columns=["round", "judge", "comparison", "win_rate", "low", "high", "pairs"])
    wins["series"] = wins["comparison"] + " (" + wins["judge"] + ")"
    later = "appears after the first round that trains a judge"
    return [
        _line(accuracy, "round", "accuracy", "series", "Judge accuracy: newest batch and earlier test sets", later),
        _line(wins, "round", "win_rate", "series", "New policy's win rate (95% intervals)", later, ("low", "high")),
        _line(pd.DataFrame(data["length"], columns=["round", "policy", "mean_words"]), "round", "mean_words", "policy",
              "Mean summary length (words)", "appears after a round's evaluation"),
        _line(pd.DataFrame(data["layout"], columns=["round", "policy", "share"]), "round", "share", "policy",
              "Share of samples restating the post's layout", "appears after a round's evaluation"),
        _line(agreement, "round", "pairwise agreement", None, "Human agreement on each round's batch",
              "appears once a round's batch has judgements from two raters"),
    ]


def _compact(value: Any) -> str:
    return "" if value is None else json.dumps(value, separators=(", ", ": "), default=str)


def reviews_table(items: list[dict[str, Any]]) -> pd.DataFrame:
    if not items:
        return pd.DataFrame({"disagreements": ["None open. Rounds queue tasks here where the judge confidently "
                                               "overrules the annotators' majority."]})

    def text(item: dict[str, Any], key: str) -> str:
        return next(s["text"] for s in item["summaries"] if s[key])

    return pd.DataFrame([{
        "item": i["id"], "round": i["round"], "title": i["title"], "document": i["document"][:240],
        "humans' choice": text(i, "humans_choice"), "judge's choice": text(i, "judges_choice"),
        "votes": " / ".join(str(s["votes"]) for s in i["summaries"]), "judge P": round(i["confidence"], 3),
        "judge": i["judge"], "raters": ", ".join(i["raters"])} for i in items])


def versions_table(rows: list[dict[str, Any]]) -> pd.DataFrame:
    names = {r["id"]: r["name"] for r in rows}
    return pd.DataFrame([{**r, "parent": names.get(r["parent_id"]), "snapshot": _compact(r["snapshot"]),
                          "config": _compact(r["config"]), "metrics": _compact(r["metrics"])} for r in reversed(rows)],
                        columns=VERSION_COLUMNS)


def build_training(events: AdminEvents, tx: Transactions, default_schedule: str) -> gr.Tab:
    """The tab (shown to admins only by the app); every handler goes through `events`."""
    with gr.Tab("Training", visible=False, elem_id="training-tab") as tab:
        gr.Markdown("### Run a round")
        with gr.Row():
            docs = gr.Number(0, label="Documents (0: those of the new judgements)", precision=0,
                             elem_id="round-docs")
            judge = gr.Dropdown(list(JUDGES), value="reward", label="Judge that ranks", elem_id="round-judge")
            mode = gr.Dropdown(list(MODES), value="sample-rank", label="Mode", elem_id="round-mode")
            simulated = gr.Checkbox(label="Count simulated raters", elem_id="round-simulated")
        with gr.Row():
            run = gr.Button("Run a round now", variant="primary", elem_id="round-run")
            cancel = gr.Button("Cancel the open round", variant="stop", elem_id="round-cancel")
        message = gr.Markdown(elem_id="training-message")
        alarm = gr.Markdown(elem_id="hacking-alarm")
        with gr.Row():
            alarm_round = gr.Number(0, label="Round whose alarm you have read", precision=0, elem_id="alarm-round")
            acknowledge_btn = gr.Button("Acknowledge the reward-hacking alarm", elem_id="alarm-acknowledge")
        progress = gr.Markdown("No round is running.", elem_id="round-progress")
        log = gr.Textbox(label="Last log lines", lines=6, interactive=False, elem_id="round-log")
        rounds = gr.Dataframe(label="Rounds", elem_id="round-history", max_height=420)
        with gr.Row():
            accuracy_plot = gr.Plot(label="Judge accuracy")
            win_plot = gr.Plot(label="Win rates")
        with gr.Row():
            length_plot = gr.Plot(label="Length")
            layout_plot = gr.Plot(label="Layout restatements")
            agreement_plot = gr.Plot(label="Human agreement")
        gr.Markdown("### Judge against humans: disagreements to review")
        reviews = gr.Dataframe(label="Tasks where the judge is confident (P ≥ 0.8) the humans' majority is wrong",
                               elem_id="review-list", wrap=True, max_height=520)
        with gr.Row():
            review_item = gr.Number(0, label="Item", precision=0, elem_id="review-item")
            review_verdict = gr.Dropdown(list(VERDICTS), value=VERDICTS[0], label="Verdict", elem_id="review-verdict")
            settle_btn = gr.Button("Settle the item", elem_id="review-settle")
        gr.Markdown("### Model versions")
        versions = gr.Dataframe(label="Versions, newest first (parent, round, data snapshot, config, metrics)",
                                elem_id="model-versions", max_height=420)
        with gr.Row():
            version = gr.Dropdown(label="Policy version", allow_custom_value=True, elem_id="promote-version")
            reason = gr.Textbox(label="Reason (recorded)", elem_id="registry-reason")
            promote_btn = gr.Button("Promote", elem_id="promote-btn")
            rollback_btn = gr.Button("Roll back", elem_id="rollback-btn")
        registry = gr.Dataframe(label="Promotions and roll-backs", elem_id="registry-events")
        gr.Markdown("### Schedule")
        with gr.Row():
            schedule = gr.Textbox(label="When the worker requests a round (UTC): DAY HH:MM, daily HH:MM, or off",
                                  elem_id="round-schedule")
            save_schedule = gr.Button("Save schedule", elem_id="schedule-save")
        # ticks only once an admin has opened the tab (`everything` starts it)
        timer = gr.Timer(2.0, active=False)

        def live(admin: str) -> list[Any]:
            with tx() as db:
                now, rows = live_progress(db), history(db)
            table = pd.DataFrame(rows, columns=HISTORY_COLUMNS).round(3)
            return [progress_text(now), "\n".join(now["log"]) if now else "", table if rows else
                    pd.DataFrame({"rounds": [NO_ROUNDS]})]

        def everything(admin: str) -> list[Any]:
            with tx() as db:
                data, rows = trends(db), list_versions(db)
                changes, spec = registry_events(db), current_schedule(db, default_schedule)
                alarms, open_items = alarm_text(db), review_items(db)
                agreement = agreement_by_round(load_frames(db, Filters(include_simulated=True)).judgements)
            policies = [r["name"] for r in rows if r["kind"] == ModelKind.POLICY.value]
            return [*live(admin), alarms, *trend_plots(data, agreement), reviews_table(open_items),
                    versions_table(rows), gr.update(choices=policies, value=None), pd.DataFrame(changes), spec,
                    gr.Timer(active=True)]

        def acted(admin: str, text: str) -> list[Any]:
            """What an action returns: its message, then the whole tab afresh."""
            return [text, *everything(admin)]

        def on_run(admin: str, n: float | None, kind: str, how: str, sim: bool) -> list[Any]:
            with shown_to_admin(), tx() as db:
                if n is not None and n < 0:
                    raise gr.Error("documents: must be 0 (those of the new judgements) or more")
                options = RoundOptions(docs=int(n) if n else None, judge=kind, mode=how, include_simulated=bool(sim))
                number = request_round(db, options, f"web:{admin}").number
            return acted(admin, f"Round {number} requested; a worker picks it up within seconds.")

        def on_cancel(admin: str) -> list[Any]:
            with tx() as db:
                now = live_progress(db)
            if now is None:
                raise gr.Error("No round is requested or running.")
            with shown_to_admin(), tx() as db:
                status = cancel_round(db, now["round"]).status.value
            what = "cancelled" if status == "cancelled" else "will stop at its next check"
            return acted(admin, f"Round {now['round']} {what}.")

        def on_promote(admin: str, name: str | None, why: str) -> list[Any]:
            if not name:
                raise gr.Error("version: choose a policy version")
            with shown_to_admin(), tx() as db:
                promote(db, resolve_version(db, name, (ModelKind.POLICY,)), f"web:{admin}", why or None)
            return acted(admin, f"{name} is the active policy.")

        def on_rollback(admin: str, why: str) -> list[Any]:
            with shown_to_admin(), tx() as db:
                target = rollback(db, f"web:{admin}", why or None).model_version_id
                name = next(r["name"] for r in list_versions(db) if r["id"] == target)
            return acted(admin, f"Rolled back: {name} is the active policy.")

        def on_acknowledge(admin: str, number: float | None) -> list[Any]:
            with shown_to_admin(), tx() as db:
                acknowledge(db, int(number or 0), f"web:{admin}")
            return acted(admin, f"Round {int(number or 0)}: alarm acknowledged; rounds may promote again.")

        def on_settle(admin: str, item: float | None, verdict: str) -> list[Any]:
            with shown_to_admin(), tx() as db:
                settle(db, int(item or 0), verdict, f"web:{admin}")
            return acted(admin, f"Item {int(item or 0)}: {verdict.replace('_', ' ')}.")

        def on_schedule(admin: str, spec: str) -> list[Any]:
            with shown_to_admin(), tx() as db:
                stored = set_schedule(db, spec or "", f"web:{admin}")
            return acted(admin, f"Schedule: {stored}.")

        live_outputs = [progress, log, rounds]
        all_outputs = [*live_outputs, alarm, accuracy_plot, win_plot, length_plot, layout_plot, agreement_plot,
                       reviews, versions, version, registry, schedule, timer]
        events.on(tab.select, everything, None, all_outputs)
        events.on(timer.tick, live, None, live_outputs)
        events.on(run.click, on_run, [docs, judge, mode, simulated], [message, *all_outputs])
        events.on(cancel.click, on_cancel, None, [message, *all_outputs])
        events.on(promote_btn.click, on_promote, [version, reason], [message, *all_outputs])
        events.on(rollback_btn.click, on_rollback, [reason], [message, *all_outputs])
        events.on(save_schedule.click, on_schedule, [schedule], [message, *all_outputs])
        events.on(settle_btn.click, on_settle, [review_item, review_verdict], [message, *all_outputs])
        events.on(acknowledge_btn.click, on_acknowledge, [alarm_round], [message, *all_outputs])
    return tab
