"""`calibra round …`, `calibra worker`, `calibra sft`, `calibra simulate` and `calibra models
promote|rollback`: the weekly loop from the command line."""
from __future__ import annotations

import getpass
import json
import threading
import time
from typing import TYPE_CHECKING, Annotated, Any

import typer
from tqdm import tqdm

from app.cli_support import print_payload, reports_errors
from app.context import Context, open_context
from app.judges_cli import ReportTo
from db.backup import describe

if TYPE_CHECKING:
    from annotate.simulate import Scorer

round_cli = typer.Typer(help="Training rounds of the weekly loop: request, watch, cancel, schedule.",
                        no_args_is_help=True)

ENDED = ("succeeded", "skipped", "failed", "cancelled")


def _actor() -> str:
    return f"cli:{getpass.getuser()}"


@round_cli.command("run")
@reports_errors
def round_run(
    wait: Annotated[bool, typer.Option("--wait", help="show each stage's progress; exit 1 if the round fails")] = False,
    docs: Annotated[int | None, typer.Option(help="documents to sample and rank (default: those of the new "
                                                  "judgements)")] = None,
    judge: Annotated[str, typer.Option(help="reward | ranker: the judge that ranks the round's samples")] = "reward",
    mode: Annotated[str, typer.Option(help="sample-rank | direct (the human pairs, when no judge is trusted)")]
    = "sample-rank",
    eval_docs: Annotated[int, typer.Option(help="held-out documents for the evaluation")] = 30,
    batch_docs: Annotated[int | None, typer.Option(help="fresh documents for the next batch (default: the "
                                                        "round_batch_docs setting)")] = None,
    pool: Annotated[bool, typer.Option("--pool", help="train the judges on every round's judgements")] = False,
    next_batch_selection: Annotated[str | None, typer.Option(
        help="random | uncertainty (default: the next_batch_selection setting)")] = None,
    include_simulated: Annotated[bool, typer.Option("--include-simulated",
                                                    help="simulated raters' judgements count")] = False,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Request a round; a worker (`calibra worker`, or the one `calibra serve` starts) runs it.
    Round 0 is the supervised start (SFT on the human references); later rounds retrain the
    judges, run SLiC-HF, evaluate and gate the promotion, and send the next batch to annotators.

    Examples:
      calibra round run --wait
      calibra round run --judge ranker --docs 64 --wait
    """
    from training.rounds.config import RoundOptions
    from training.rounds.store import request_round, round_payload

    options = RoundOptions(docs=docs, judge=judge, mode=mode, eval_docs=eval_docs, batch_docs=batch_docs, pool=pool,
                           include_simulated=include_simulated, next_batch_selection=next_batch_selection)
    ctx = open_context()
    with ctx.transaction() as db:
        requested = round_payload(request_round(db, options, _actor()), stages=False)
    if not wait:
        print_payload(requested, as_json)
        return
    final = _watch(ctx, requested["round"])
    print_payload(final, as_json)
    typer.echo(_ended_line(final, ctx), err=as_json)
    if final["status"] in ("failed", "cancelled"):
        raise typer.Exit(1)


def _ended_line(payload: dict[str, Any], ctx: Context) -> str:
    """What `calibra round run --wait` ends with: how the round ended, the policy it promoted or
    kept, and where its files are."""
    number, decision = payload["round"], payload["decision"] or {}
    if "new" in decision:  # the gate decided
        outcome = (f"promoted {decision['new']}" if decision.get("promote")
                   else f"kept {decision.get('current') or 'the current policy'} over {decision['new']}")
    else:
        outcome = payload["reason"] or "no promotion decided"
    return (f"round {number} {payload['status']}: {outcome}; files in {ctx.settings.home / 'rounds' / f'loop-{number}'}"
            f" (calibra round show {number})")


def _watch(ctx: Context, number: int) -> dict[str, Any]:
    """Follow a round in the database until it ends: a progress bar per stage."""
    from training.rounds.store import find_round, round_payload

    bars: dict[str, tqdm] = {}
    waited, hinted = time.monotonic(), False
    while True:
        with ctx.transaction() as db:
            payload = round_payload(find_round(db, number))
        if payload["status"] == "requested" and not hinted and time.monotonic() - waited > 15:
            typer.echo("waiting for a worker to claim the round (start one with `calibra worker`)", err=True)
            hinted = True
        for stage in payload["stages"]:
            bar = bars.get(stage["name"])
            if bar is None:
                bar = bars[stage["name"]] = tqdm(desc=f"round {number}: {stage['name']}", unit="step", total=None)
            progress = stage["progress"] or {}
            if progress.get("total"):
                bar.total = progress["total"]
                bar.n = progress["step"]
                bar.set_postfix(loss=f"{progress['loss']:.3f}" if progress.get("loss") is not None else "-")
            bar.set_postfix_str(stage["status"], refresh=True)
        if payload["status"] in ENDED:
            for bar in bars.values():
                bar.close()
            return payload
        time.sleep(1.0)


@round_cli.command("list")
@reports_errors
def round_list(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Every round, newest first: status, times, reason, the gate's decision."""
    from training.rounds.store import list_rounds

    with open_context().transaction() as db:
        rows = list_rounds(db)
    if as_json:
        typer.echo(json.dumps(rows, indent=2, default=str))
        return
    if not rows:
        typer.echo("no rounds yet; request one with `calibra round run`")
    for r in rows:
        decision = r["decision"] or {}
        verdict = "" if not decision else ("promoted" if decision.get("promote") else "kept the current policy")
        typer.echo(f"round {r['round']:>3}  {r['status']:<10} {r['requested_at']}  {verdict}  {r['reason'] or ''}")


@round_cli.command("show")
@reports_errors
def round_show(number: Annotated[int, typer.Argument(help="round number")],
               as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """One round with its stages: status, times, progress, metrics, log lines and errors."""
    from training.rounds.store import find_round, round_payload

    with open_context().transaction() as db:
        payload = round_payload(find_round(db, number))
    if as_json:
        typer.echo(json.dumps(payload, indent=2, default=str))
        return
    typer.echo(f"round {payload['round']}: {payload['status']}  {payload['reason'] or ''}")
    alarm = payload["reward_hacking"]
    if alarm:
        state = ("ALARM" + (f", acknowledged by {alarm['acknowledged_by']}" if alarm.get("acknowledged_by") else "")
                 if alarm["alarm"] else "no alarm")
        typer.echo(f"  reward hacking: judge predicted {alarm['predicted']:.2f}, annotators {alarm['human']:.2f} "
                   f"(gap {alarm['gap']:+.2f}): {state}")
    for stage in payload["stages"]:
        typer.echo(f"  {stage['name']:<11} {stage['status']:<8} {stage['error'] or ''}")
        for line in stage["log"][-5:]:
            typer.echo(f"      {line}")


@round_cli.command("cancel")
@reports_errors
def round_cancel(number: Annotated[int, typer.Argument(help="round number")]) -> None:
    """Cancel a requested round at once, or a running one at its next check."""
    from training.rounds.store import cancel_round

    with open_context().transaction() as db:
        status = cancel_round(db, number).status.value
    typer.echo(f"round {number}: {'cancelled' if status == 'cancelled' else 'cancellation requested'}")


@round_cli.command("acknowledge")
@reports_errors
def round_acknowledge(number: Annotated[int, typer.Argument(help="round number")]) -> None:
    """Acknowledge a round's reward-hacking alarm (recorded with who did it), so that rounds
    may promote automatically again."""
    from training.rounds.hacking import acknowledge

    with open_context().transaction() as db:
        acknowledge(db, number, _actor())
    typer.echo(f"round {number}: reward-hacking alarm acknowledged")


@round_cli.command("schedule")
@reports_errors
def round_schedule(spec: Annotated[str, typer.Argument(help="DAY HH:MM (UTC; DAY mon..sun or daily), or off")]) -> None:
    """When the worker requests rounds by itself; kept in the database, so it survives restarts.

    Examples:
      calibra round schedule "mon 02:00"
      calibra round schedule off
    """
    from training.rounds.schedule import set_schedule

    with open_context().transaction() as db:
        stored = set_schedule(db, spec, _actor())
    typer.echo(f"round schedule: {stored}")


@reports_errors
def worker(
    once: Annotated[bool, typer.Option("--once", help="run the requested round (if any) and exit")] = False,
    poll: Annotated[float, typer.Option(help="seconds between looks for a requested round")] = 2.0,
) -> None:
    """Run requested rounds one at a time, keep the round schedule, and resume rounds whose
    worker died. Runs until stopped (Ctrl+C)."""
    from annotate.tasks import create_round_tasks
    from training.worker import Worker

    ctx = open_context()
    w = Worker(ctx.transaction, ctx.engine, ctx.loop_settings(), create_round_tasks,
               default_schedule=ctx.settings.round_schedule, poll_s=poll)
    if once:
        w.recover()
        status = w.run_once()
        typer.echo("no round was requested" if status is None else f"round ended: {status.value}")
        return
    typer.echo(f"worker {w.name} is waiting for rounds", err=True)
    stop = threading.Event()
    try:
        w.serve(stop)
    except KeyboardInterrupt:
        stop.set()


@reports_errors
def sft(
    docs: Annotated[int | None, typer.Option(help="documents with a human reference (default: all)")] = None,
    preferred: Annotated[bool, typer.Option("--preferred", help="also each pair's human-preferred summary")] = False,
    name: Annotated[str, typer.Option(help="the new policy version's name")] = "policy-sft",
    epochs: Annotated[int | None, typer.Option()] = None,
    learning_rate: Annotated[float | None, typer.Option()] = None,
    lora_r: Annotated[int | None, typer.Option()] = None,
    activate: Annotated[bool, typer.Option(help="make the new policy the active one")] = False,
    report_to: ReportTo = "none",
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Supervised fine-tuning of the policy (a LoRA adapter) on the human reference summaries:
    the supervised start that SLiC-HF and Llama 2 begin from. `calibra slic eval --model NAME`
    measures it; round 0 of the loop runs it, evaluates it and gates its promotion.

    Example: calibra sft --docs 400 --activate
    """
    from training.slic.jobs import registered_line
    from training.slic.jobs import sft as run

    ctx = open_context()
    overrides = {k: v for k, v in dict(epochs=epochs, learning_rate=learning_rate, lora_r=lora_r,
                                       report_to=report_to).items() if v is not None}
    done = run(ctx.transaction, ctx.settings.home, docs=docs, preferred=preferred, name=name, overrides=overrides,
               activate=activate)
    if done is not None:
        print_payload(done, as_json)
        typer.echo(registered_line(done), err=as_json)


@reports_errors
def simulate(
    judge: Annotated[str, typer.Option(help="VERSION (a trained judge: AI feedback) | length | random")],
    raters: Annotated[int, typer.Option(help="how many simulated raters")] = 3,
    noise: Annotated[float, typer.Option(help="share of picks made at random")] = 0.0,
    position_bias: Annotated[float, typer.Option(help="share of picks of the first summary shown")] = 0.0,
    round_: Annotated[int | None, typer.Option("--round", help="only tasks of this round")] = None,
    seed: Annotated[int, typer.Option()] = 0,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Answer open tasks with simulated raters, through the same submission code as people.
    Their judgements are marked and stay out of reports, exports and training unless asked for
    (`--include-simulated`).

    Examples:
      calibra simulate --judge length --raters 3 --noise 0.2
      calibra simulate --judge reward-r1 --raters 3 --round 2
    """
    from annotate.simulate import SimulationSpec, length_scorer, random_scorer
    from annotate.simulate import simulate as run

    ctx = open_context()
    spec = SimulationSpec(raters=raters, label=judge, noise=noise, position_bias=position_bias, round=round_, seed=seed)
    scorer: Scorer
    if judge == "length":
        scorer = length_scorer
    elif judge == "random":
        scorer = random_scorer(seed)
    else:
        from training.judges.jobs import judge_scorer

        scorer = judge_scorer(ctx.transaction, judge)
    done = run(ctx.transaction, spec, scorer)
    print_payload({"judgements": sum(done.values()), "raters": done}, as_json)
    typer.echo(f"{sum(done.values())} judgements by {len(done)} simulated raters ({judge}) stored in "
               f"{describe(ctx.settings.database_url)}, marked simulated (--include-simulated to use them)",
               err=as_json)


@reports_errors
def models_promote(version: Annotated[str, typer.Argument(help="policy version (name or id)")],
                   reason: Annotated[str | None, typer.Option(help="recorded with the change")] = None) -> None:
    """Make a policy version the active one by hand (recorded with who did it).

    Example: calibra models promote policy-r3 --reason "read the samples"
    """
    from db.models import ModelKind
    from training.registry import promote, resolve_version

    with open_context().transaction() as db:
        promote(db, resolve_version(db, version, (ModelKind.POLICY,)), _actor(), reason)
    typer.echo(f"{version} is the active policy")


@reports_errors
def models_rollback(reason: Annotated[str | None, typer.Option(help="recorded with the change")] = None) -> None:
    """Go back to the policy that was active before the current one (recorded with who did it)."""
    from training.registry import rollback

    with open_context().transaction() as db:
        event = rollback(db, _actor(), reason)
        target = event.model_version_id
    typer.echo(f"rolled back: model version {target} is the active policy")


def register(cli: typer.Typer, models_cli: typer.Typer) -> None:
    cli.add_typer(round_cli, name="round")
    cli.command("worker")(worker)
    cli.command("sft")(sft)
    cli.command("simulate")(simulate)
    models_cli.command("promote")(models_promote)
    models_cli.command("rollback")(models_rollback)

