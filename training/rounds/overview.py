"""What the admins' Training page shows of the loop: the round in progress with its ETA, the
history, and the figures to compare across rounds (long tables, one row a point, ready to plot)."""
from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from db.models import TrainingRound, utcnow
from training.rounds.config import JUDGES
from training.rounds.hacking import open_alarms
from training.rounds.intervals import wilson
from training.rounds.review import counts_line, review_counts
from training.rounds.store import OPEN, find_round, round_payload

LOG_TAIL = 12  # log lines the page shows of the running stage


def _seconds_since(iso: str | None, now: datetime) -> float | None:
    return (now - datetime.fromisoformat(iso)).total_seconds() if iso else None


def live_progress(db: Session) -> dict[str, Any] | None:
    """The requested or running round: its stage, step of total, loss, elapsed time, an ETA of
    the stage from its pace so far, and the stage's last log lines; None when none is open."""
    round_ = db.scalar(select(TrainingRound).where(TrainingRound.status.in_(OPEN)).order_by(TrainingRound.id))
    if round_ is None:
        return None
    payload = round_payload(round_)
    now = utcnow()
    stage = next((s for s in reversed(payload["stages"]) if s["status"] == "running"), None)
    out: dict[str, Any] = {"round": payload["round"], "status": payload["status"],
                           "cancel_requested": payload["cancel_requested"],
                           "elapsed_s": _seconds_since(payload["started_at"], now),
                           "stages_done": [s["name"] for s in payload["stages"] if s["status"] in ("done", "skipped")],
                           "stage": None, "step": None, "total": None, "loss": None, "stage_elapsed_s": None,
                           "eta_s": None, "log": []}
    if stage is not None:
        progress = stage["progress"] or {}
        step, total = progress.get("step"), progress.get("total")
        stage_elapsed = _seconds_since(stage["started_at"], now)
        eta = None
        if step and total and stage_elapsed is not None:
            eta = stage_elapsed / step * max(0, total - step)
        out.update(stage=stage["name"], step=step, total=total, loss=progress.get("loss"),
                   stage_elapsed_s=stage_elapsed, eta_s=eta, log=stage["log"][-LOG_TAIL:])
    return out


def _stage(payload: dict[str, Any], name: str) -> dict[str, Any]:
    stage = next((s for s in payload["stages"] if s["name"] == name), None)
    return (stage or {}).get("metrics") or {}


def history(db: Session) -> list[dict[str, Any]]:
    """Every round, newest first: status, timings, data snapshot, the judges' accuracy, the gate's
    decision and its reason."""
    rows = []
    reviews = review_counts(db)
    for round_ in db.scalars(select(TrainingRound).order_by(TrainingRound.number.desc())):
        p = round_payload(round_)
        snap, decision, judges = p["snapshot"] or {}, p["decision"] or {}, _stage(p, "judges")
        started, finished = p["started_at"], p["finished_at"]
        minutes = ((datetime.fromisoformat(finished) - datetime.fromisoformat(started)).total_seconds() / 60
                   if started and finished else None)
        rows.append({
            "round": p["round"], "status": p["status"], "requested_by": p["requested_by"], "started_at": started,
            "minutes": None if minutes is None else round(minutes, 1),
            "judgements": snap.get("judgements"), "pairs": snap.get("pairs"),
            "judgement_ids": f"{snap['judgement_id_min']}–{snap['judgement_id_max']}" if snap else None,
            "reward_accuracy": (judges.get("reward") or {}).get("newest_batch_accuracy"),
            "ranker_accuracy": (judges.get("ranker") or {}).get("newest_batch_accuracy"),
            "promoted": decision.get("promote"), "new_policy": decision.get("new"),
            "reward_hacking": _hacking_line(p["reward_hacking"]),
            "disagreement_reviews": counts_line(reviews.get(p["round"])),
            "decision": "; ".join(decision.get("reasons") or []) or None, "reason": p["reason"]})
    return rows


def _hacking_line(check: dict[str, Any] | None) -> str | None:
    if not check:
        return None
    state = "ALARM" if check["alarm"] else "ok"
    if check["alarm"] and check.get("acknowledged_by"):
        state += f" (acknowledged by {check['acknowledged_by']})"
    return f"{state}: judge {check['predicted']:.2f} vs annotators {check['human']:.2f}"


def alarm_text(db: Session) -> str:
    """The Training page's banner: every unacknowledged reward-hacking alarm, or nothing."""
    lines = []
    for number in open_alarms(db):
        check = find_round(db, number).decision["reward_hacking"]  # type: ignore[index]
        lines.append(f"⚠ **Reward-hacking alarm, round {number}**: the judge ({check['judge']}) predicted a win rate "
                     f"of {check['predicted']:.2f} for the new policy, the annotators gave {check['human']:.2f} "
                     f"over {check['verdicts']} verdicts. Automatic promotion is blocked until an admin "
                     "acknowledges it.")
    return "\n\n".join(lines)


def trends(db: Session) -> dict[str, list[dict[str, Any]]]:
    """Figures across rounds, as long tables: judge accuracy on the newest batch and on earlier
    rounds' test sets; the new policy's win rates over the previous one and over the human
    reference with 95% intervals; mean summary length; layout-restatement share; ROUGE-L."""
    out: dict[str, list[dict[str, Any]]] = {"judge_accuracy": [], "win_rate": [], "length": [], "layout": [],
                                            "rouge_l": []}
    for round_ in db.scalars(select(TrainingRound).order_by(TrainingRound.number)):
        p = round_payload(round_)
        number = p["round"]
        judges = _stage(p, "judges")
        for kind in JUDGES:
            judged = judges.get(kind) or {}
            if judged.get("newest_batch_accuracy") is not None:
                out["judge_accuracy"].append({"round": number, "judge": kind, "test set": "newest batch",
                                              "accuracy": judged["newest_batch_accuracy"]})
            for earlier, accuracy in (judged.get("earlier_test_sets") or {}).items():
                out["judge_accuracy"].append({"round": number, "judge": kind, "test set": f"round {earlier}",
                                              "accuracy": accuracy})
        summary = _stage(p, "evaluate").get("summary") or {}
        n = int(summary.get("documents") or 0)
        for key, value in summary.items():
            if key.endswith("_win_rate") and value is not None and "_vs_" in key:
                judge, _, comparison = key.removesuffix("_win_rate").partition("_")
                low, high = wilson(value, n)
                out["win_rate"].append({"round": number, "judge": judge, "comparison": comparison.replace("_", " "),
                                        "win_rate": value, "low": low, "high": high, "pairs": n})
        for policy, words in (summary.get("mean_words") or {}).items():
            out["length"].append({"round": number, "policy": policy, "mean_words": words})
        for policy, share in (summary.get("repeats_layout") or {}).items():
            out["layout"].append({"round": number, "policy": policy, "share": share})
        for policy, score in (summary.get("rouge_l") or {}).items():
            out["rouge_l"].append({"round": number, "policy": policy, "rouge_l": score})
    return out
