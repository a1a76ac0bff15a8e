"""Shared fixtures: settings in a temporary home, databases (SQLite, PostgreSQL), tiny models."""
from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

# No test may reach a model hub; the one that checks the error for an unreachable hub says so.
os.environ["HF_HUB_OFFLINE"] = "1"

from app.config import Settings, load_settings

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared"
TLDR = SHARED / "data" / "tldr"


def models_dir() -> Path:
    return Path(os.environ.get("CALIBRA_MODELS_DIR", ROOT / ".calibra" / "models"))


# The suite runs twice in `make test`: on SQLite, then with CALIBRA_TEST_DATABASE=postgresql, where
# every test's Calibra home (and every command it runs) uses a new PostgreSQL database instead.
ON_POSTGRES = os.environ.get("CALIBRA_TEST_DATABASE", "sqlite") == "postgresql"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The PostgreSQL pass runs the tests that use a Calibra home's database (the `env` fixture,
    which every command, app and context here starts from), except those of SQLite itself; the
    rest (models, losses, parsing) would only run again unchanged."""
    if not ON_POSTGRES:
        return
    sqlite_only = pytest.mark.skip(reason="tests SQLite itself; this pass runs on PostgreSQL")
    no_database = pytest.mark.skip(reason="uses no Calibra database; it ran in the SQLite pass")
    for item in items:
        if item.get_closest_marker("sqlite") is not None:
            item.add_marker(sqlite_only)
        elif "env" not in getattr(item, "fixturenames", ()) and item.get_closest_marker("postgres") is None:
            item.add_marker(no_database)


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest) -> Path:
    """A fresh CALIBRA_HOME with the shared default models, as the CLI would see it."""
    for key in [k for k in os.environ if k.startswith("CALIBRA_") and k != "CALIBRA_TEST_DATABASE"]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("CALIBRA_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("CALIBRA_MODELS_DIR", str(models_dir()))
    if ON_POSTGRES:
        monkeypatch.setenv("CALIBRA_DATABASE_URL", request.getfixturevalue("pg_database"))
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture
def settings(env: Path) -> Settings:
    return load_settings()


@pytest.fixture
def ctx(settings: Settings):  # type: ignore[no-untyped-def]
    from app.context import open_context

    context = open_context(settings)
    yield context
    context.engine.dispose()


TOPICS = ["my neighbour's dog barks all night", "my landlord raised the rent again", "my friend never pays me back",
          "my boss calls me on weekends", "my roommate eats my food", "my sister borrowed my car and crashed it"]


def write_posts(path: Path, n: int) -> Path:
    """n short posts with a title, a subreddit and a human reference summary, as JSONL."""
    path.write_text("".join(json.dumps({
        "id": f"p{i}", "title": f"Question {i}", "subreddit": "advice",
        "text": f"Post {i}: {TOPICS[i % len(TOPICS)]} and I do not know what to do about it. Any advice?",
        "reference": f"{TOPICS[i % len(TOPICS)]}; what should I do"}) + "\n" for i in range(n)))
    return path


@pytest.fixture
def loop_ready(ctx, env: Path, tiny_lm: Path):  # type: ignore[no-untyped-def]
    """What the weekly loop starts from: 40 imported posts with references and a tiny active
    policy."""
    from annotate.importing import import_files
    from db.models import ModelKind, ModelVersion
    from training.registry import activate

    import_files(ctx.transaction, [write_posts(env / "posts.jsonl", 40)], source="test")
    with ctx.transaction() as db:
        tiny = ModelVersion(kind=ModelKind.POLICY, name="tiny", base_model=str(tiny_lm), round=0)
        db.add(tiny)
        db.flush()
        activate(db, tiny)
    return ctx


QUALITY = {"alpha": 6, "beta": 3, "human reference": 5}  # mean quality each source gets in `judged`


@pytest.fixture
def judged(ctx):  # type: ignore[no-untyped-def]
    """12 tasks of three summaries: alpha (longest), beta (shortest), the human reference.
    r1 and r2 always choose alpha; r3 always chooses whatever is shown first, and sees alpha,
    beta and the reference first four times each."""
    from db import (
        Assignment,
        AssignmentStatus,
        Candidate,
        CandidateOrigin,
        CandidateRating,
        ComparisonTask,
        Document,
        Judgement,
        ModelKind,
        ModelVersion,
        Rater,
        TaskCandidate,
    )
    from db.models import digest

    with ctx.transaction() as db:
        alpha = ModelVersion(kind=ModelKind.POLICY, name="alpha", base_model="x")
        beta = ModelVersion(kind=ModelKind.POLICY, name="beta", base_model="x")
        raters = [Rater(name=n) for n in ("r1", "r2", "r3")]
        db.add_all([alpha, beta, *raters])
        for t in range(12):
            doc = Document(source="t", text=f"post {t}", content_hash=digest(f"post {t}"), reference_summary="r")
            texts = {"alpha": f"a long and detailed summary of post {t} with many words in it, twenty at least here",
                     "beta": f"short {t}", "human reference": f"the reference summary of post {t} here"}
            cands = {k: Candidate(document=doc, text=v, text_hash=digest(v),
                                  origin=CandidateOrigin.REFERENCE if k == "human reference" else CandidateOrigin.MODEL,
                                  model_version={"alpha": alpha, "beta": beta}.get(k)) for k, v in texts.items()}
            task = ComparisonTask(document=doc, round=1 if t < 6 else 2,
                                  slots=[TaskCandidate(candidate=c, slot=i) for i, c in enumerate(cands.values())])
            db.add(task)
            db.flush()
            names = list(cands)
            for k, rater in enumerate(raters):
                order = [names[(t + k + i) % 3] for i in range(3)]
                best = "alpha" if rater.name != "r3" else order[0]
                a = Assignment(task=task, rater=rater, status=AssignmentStatus.SUBMITTED,
                               display_order=[cands[n].id for n in order])
                db.add(Judgement(assignment=a, task=task, rater=rater, best_candidate=cands[best],
                                 time_taken_s=10.0 + k,
                                 ratings=[CandidateRating(candidate=cands[n], quality=QUALITY[n], factual=n != "beta")
                                          for n in order]))
    return ctx


CHROMIUM = Path("/usr/bin/chromium")


@pytest.fixture
def browser():  # type: ignore[no-untyped-def]
    """Debian's Chromium, headless, driven by Playwright."""
    from playwright.sync_api import sync_playwright

    if not CHROMIUM.exists():
        pytest.fail("Chromium is missing: sudo apt-get install -y chromium (make test installs it as root)")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM),
                              args=["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        yield b
        b.close()


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A throw-away PostgreSQL server from Debian's binaries, on loopback, for the whole session."""
    from db.local_postgres import PostgresMissing, throwaway_server

    try:
        with throwaway_server(fsync=False) as url:
            yield url
    except PostgresMissing as exc:
        pytest.fail(f"{exc}; make test installs it as root")


@pytest.fixture
def pg_database(postgres_url: str) -> Iterator[str]:
    """A new empty database on the session's server, for one test."""
    import psycopg

    name = f"t{time.time_ns()}"
    admin = postgres_url.replace("postgresql+psycopg", "postgresql")
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    yield postgres_url.rsplit("/", 1)[0] + f"/{name}"


@pytest.fixture(scope="session")
def tiny_lm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A randomly initialised Llama-style LM with its own small BPE tokenizer and chat template."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    corpus = [line for p in sorted((ROOT / "app" / "demo").glob("*.jsonl")) for line in p.read_text().splitlines()]
    bpe = Tokenizer(models.BPE(unk_token=None))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    bpe.train_from_iterator(corpus, trainers.BpeTrainer(vocab_size=512, special_tokens=specials,
                                                         initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe, bos_token="<|im_start|>", eos_token="<|im_end|>",
                                        pad_token="<|endoftext|>")
    tokenizer.chat_template = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
                               "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=True)
    out = tmp_path_factory.mktemp("tiny-lm")
    LlamaForCausalLM(config).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def default_policy() -> Path:
    from training.defaults import POLICY

    path = POLICY.path(models_dir())
    if not path.exists():
        pytest.fail(f"default policy missing at {path}: run `calibra models fetch` (make setup does)")
    return path


@pytest.fixture(scope="session")
def tiny_encoder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A randomly initialised two-layer BERT with the default encoder's WordPiece tokenizer."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    tokenizer = AutoTokenizer.from_pretrained(models_dir() / "all-minilm-l6-v2")
    torch.manual_seed(0)
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                        num_attention_heads=4, max_position_embeddings=512)
    out = tmp_path_factory.mktemp("tiny-encoder")
    BertModel(config).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out
