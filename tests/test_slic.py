"""SLiC-HF: the loss by hand, log-probs against the plain computation, LoRA-only gradients,
resume, and a whole round on tiny models."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from annotate.errors import InvalidInput
from training.loading import load_causal_lm, load_tokenizer
from training.slic.collator import SlicCollator, SlicExample
from training.slic.config import SlicConfig
from training.slic.data import RankedDocument, RoundDocument, direct_documents, read_round, slic_examples
from training.slic.loss import continuation_logprobs, full_sequence_logprobs, slic_loss
from training.slic.trainer import SequenceScorer, add_policy_lora, slic_step, train_slic


def test_slic_loss_by_hand() -> None:
    pos, neg, ref = torch.tensor([-2.0, -5.0]), torch.tensor([-4.0, -3.0]), torch.tensor([-1.0, -2.0])
    # first pair: 1 - (-2) + (-4) = -1 -> hinge inactive (0); second: 1 + 5 - 3 = 3 -> active
    loss, calibration = slic_loss(pos, neg, ref, SlicConfig(delta=1.0, reg_weight=0.0))
    assert (loss.item(), calibration.item()) == (1.5, 1.5)
    # λ = 0.5 adds -0.5 * log P(y_ref): (0 + 0.5) and (3 + 1.0), mean 2.25
    loss, _ = slic_loss(pos, neg, ref, SlicConfig(delta=1.0, reg_weight=0.5))
    assert loss.item() == pytest.approx(2.25)
    with pytest.raises(ValueError):
        SlicConfig(delta=0)


EXAMPLES = [SlicExample("<|im_start|>user\nA short post about a cat.<|im_end|>\n<|im_start|>assistant\n",
                        "a cat", "a dog sat on the mat", "the cat post"),
            SlicExample("<|im_start|>user\nA much longer post about my landlord who would not fix the heating "
                        "all winter.<|im_end|>\n<|im_start|>assistant\n", "landlord won't fix heat", "winter",
                        "cold flat")]


def _naive(model, tokenizer, prompt: str, target: str) -> float:  # type: ignore[no-untyped-def]
    """Score one sequence the textbook way: full log-softmax, prompt positions skipped."""
    p = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    t = tokenizer(target, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    logits = model(input_ids=torch.tensor([p + t])).logits[0]
    logps = torch.log_softmax(logits.float(), -1)
    return float(sum(logps[len(p) - 1 + i, tok] for i, tok in enumerate(t)))


def test_shared_prefix_log_probs_equal_the_plain_computation(tiny_lm: Path) -> None:
    tok, model = load_tokenizer(tiny_lm), load_causal_lm(tiny_lm, device="cpu")
    batch = SlicCollator(tok)(EXAMPLES)
    args = (batch.prompt_ids, batch.prompt_mask, batch.targets, batch.target_mask)
    with torch.no_grad():
        shared = continuation_logprobs(model, *args, chunk=3)
        full = full_sequence_logprobs(model, *args, chunk=1000)
        naive = [_naive(model, tok, e.prompt, t) for e in EXAMPLES for t in (e.positive, e.negative, e.reference)]
    assert shared.tolist() == pytest.approx(naive, abs=1e-4)
    assert full.tolist() == pytest.approx(naive, abs=1e-4)
    # only summary tokens count: normalising divides by each target's own token count
    with torch.no_grad():
        mean = continuation_logprobs(model, *args, normalize=True)
    assert (mean * batch.target_mask.sum(1)).tolist() == pytest.approx(shared.tolist(), abs=1e-4)


def test_gradients_reach_only_the_lora_weights(tiny_lm: Path) -> None:
    cfg = SlicConfig(lora_r=4)
    tok = load_tokenizer(tiny_lm)
    model = add_policy_lora(load_causal_lm(tiny_lm, device="cpu"), cfg)
    model.train()
    out = slic_step(SequenceScorer(model, cfg), SlicCollator(tok)(EXAMPLES), cfg)
    out.loss.backward()
    with_grad = {n for n, p in model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    assert with_grad and all("lora_" in n for n in with_grad)
    assert any("lora_B" in n for n in with_grad)  # B starts at zero, so A's gradient is zero at first
    frozen = [p for n, p in model.named_parameters() if "lora_" not in n]
    assert all(not p.requires_grad and p.grad is None for p in frozen)
    assert 0 <= out.stats["pair_acc"] <= 1


def _records() -> list[RankedDocument]:
    doc = RoundDocument("d1", "My cat keeps knocking cups off the table.", "Cat", "pets", reference="cat breaks cups")
    return [RankedDocument(doc, ["cat knocks cups over", "a cat", "pets are fun"], best=0,
                           pairs=[(0, 1, 0.9), (2, 1, 0.6), (0, 2, 0.7)], judge="ranker:x")]


def test_round_records_give_one_example_per_ranked_pair(tiny_lm: Path) -> None:
    tok = load_tokenizer(tiny_lm)
    examples = slic_examples(_records(), tok, "chat", "reference", 512)
    assert [(e.positive, e.negative) for e in examples] == [
        ("cat knocks cups over", "a cat"), ("pets are fun", "a cat"), ("cat knocks cups over", "pets are fun")]
    assert {e.reference for e in examples} == {"cat breaks cups"}
    assert "My cat keeps knocking cups" in examples[0].prompt
    best = slic_examples(_records(), tok, "chat", "best_decode", 512)
    assert {e.reference for e in best} == {"cat knocks cups over"}
    clearest = slic_examples(_records(), tok, "chat", "reference", 512, pairs_per_document=2)
    assert [(e.positive, e.negative) for e in clearest] == [("cat knocks cups over", "a cat"),
                                                            ("cat knocks cups over", "pets are fun")]
    from training.judges.pairs import PreferencePair

    direct = direct_documents([PreferencePair("SUBREDDIT: r/pets\nTITLE: Cat\nPOST: text", "a", "b"),
                               PreferencePair("SUBREDDIT: r/pets\nTITLE: Cat\nPOST: text", "a", "c")])
    assert len(direct) == 1 and direct[0].candidates[direct[0].best] == "a"
    assert direct[0].document.subreddit == "pets" and direct[0].document.text == "text"


def test_training_resumes_after_an_interruption(tiny_lm: Path, tmp_path: Path) -> None:
    tok = load_tokenizer(tiny_lm)
    examples = slic_examples(_records() * 4, tok, "chat", "reference", 512)
    cfg = SlicConfig(lora_r=4, batch_size=2, checkpoint_every=1, learning_rate=1e-3, epochs=2)
    whole = train_slic(tiny_lm, examples, cfg, out=tmp_path / "a" / "adapter", device="cpu", progress=False)
    stopped = train_slic(tiny_lm, examples, cfg, out=tmp_path / "b" / "adapter", device="cpu", progress=False,
                         stop_after=2)
    assert stopped.metrics["interrupted"] and not (tmp_path / "b" / "adapter").exists()
    resumed = train_slic(tiny_lm, examples, cfg, out=tmp_path / "b" / "adapter", device="cpu", progress=False)
    a = {n: p for n, p in whole.model.named_parameters() if "lora_" in n}
    b = {n: p for n, p in resumed.model.named_parameters() if "lora_" in n}
    assert a.keys() == b.keys() and all(torch.allclose(a[n], b[n], atol=1e-6) for n in a)
    assert any(not torch.equal(p, torch.zeros_like(p)) for n, p in a.items() if "lora_B" in n)  # it learned
    saved = json.loads((tmp_path / "b" / "adapter" / "slic.json").read_text())
    assert saved["config"]["delta"] == 1.0 and saved["metrics"]["examples"] == len(examples)
    assert sorted(p.name for p in (tmp_path / "b").iterdir()) == ["adapter"]


def test_a_round_end_to_end_on_tiny_models(tiny_lm: Path, tiny_encoder: Path, tmp_path: Path) -> None:
    from training.generation import SamplingConfig
    from training.slic.round import Policy, RoundFiles, run_evaluation, run_sample_rank, run_train
    from training.slic.trainer import merge_adapter

    docs = [RoundDocument(str(i), f"Post number {i}: my neighbour's dog barks all night and I cannot sleep.",
                          f"Dog {i}", "advice", reference=f"dog barks at night {i}") for i in range(4)]
    files = RoundFiles(tmp_path / "round")
    sampling = SamplingConfig(per_doc=4, max_new_tokens=12, seed=0, batch_docs=2)
    base = Policy(str(tiny_lm))
    records = run_sample_rank(base, docs, "ranker", str(tiny_encoder), files, sampling=sampling, progress=False)
    assert records and all(len(r.pairs) == len(r.candidates) - 1 for r in records)  # a tournament each
    again = run_sample_rank(base, docs, "ranker", str(tiny_encoder), files, sampling=sampling, progress=False)
    assert (len(read_round(files.data)) == len(records)
            and [r.candidates for r in again] == [r.candidates for r in records])
    before = files.data.read_bytes()
    with pytest.raises(InvalidInput, match="ranked by ranker:.*not by reward:") as refused:
        run_sample_rank(base, docs, "reward", str(tiny_encoder), files, sampling=sampling, progress=False)
    assert refused.value.file == str(files.data) and files.data.read_bytes() == before  # nothing mixed in
    cfg = SlicConfig(lora_r=4, batch_size=2, learning_rate=1e-3, max_target_tokens=16)
    trained = run_train(base, records, cfg, files, progress=False)
    assert (files.adapter / "adapter_config.json").exists() and trained.metrics["pairs"] > 0
    result = run_evaluation(Policy(base.base, str(files.adapter)), base, docs,
                            {"ranker": ("ranker", str(tiny_encoder)), "reward": ("reward", str(tiny_encoder))},
                            files, sampling=sampling, cfg=cfg, progress=False)
    for judge in ("ranker", "reward"):
        stats = result["judged_by"][judge]["new_vs_previous"]
        assert stats["pairs"] == 4 and 0 <= stats["win_rate"] <= 1
        assert "new_vs_reference" in result["judged_by"][judge]
    assert set(result["reference_logprob"]) == {"new", "previous"}
    assert all(0 <= share <= 1 for share in result["repeats_layout"].values())
    assert json.loads(files.evaluation.read_text())["documents"] == 4
    merged = merge_adapter(tiny_lm, files.adapter, tmp_path / "merged")
    ids = torch.tensor([[5, 6, 7, 8]])
    with torch.no_grad():
        a = load_causal_lm(tiny_lm, device="cpu", adapter=files.adapter)(input_ids=ids).logits
        b = load_causal_lm(merged, device="cpu")(input_ids=ids).logits
    assert torch.allclose(a, b, atol=1e-4)


def test_win_rates_overrule_the_judge_where_a_sample_restates_the_layout(tiny_encoder: Path) -> None:
    from annotate.export import format_post
    from training.judges.trainer import load_judge
    from training.slic.eval import win_rates

    judge = load_judge("reward", str(tiny_encoder), device="cpu")
    posts = ["my dog barks all night", "the cat knocks cups over", "rent went up again"]
    summaries = ["dog barks at night", "cat breaks cups", "rent is up"]
    copies = [format_post("advice", "Help", post) for post in posts]
    ahead = win_rates(judge, posts, summaries, copies)
    assert ahead["win_rate"] == 1.0 and ahead["pairs"] == 3
    behind = win_rates(judge, posts, copies, summaries)
    assert behind["win_rate"] == 0.0
    # the judge's own verdicts are kept beside: one order is the other's complement
    assert behind["judge_alone_win_rate"] == pytest.approx(1 - ahead["judge_alone_win_rate"])
    plain = win_rates(judge, posts, summaries, summaries[::-1])
    assert plain["win_rate"] == plain["judge_alone_win_rate"]


@pytest.mark.slow
def test_a_round_from_the_apps_own_data_with_the_cli(env, ctx, tiny_lm: Path, tiny_encoder: Path) -> None:  # type: ignore[no-untyped-def]
    """Real posts with references imported, a ranker trained on real comparisons, then
    `calibra slic round` on a tiny policy: candidates and ranks stored, a new policy version."""
    from sqlalchemy import func, select
    from typer.testing import CliRunner

    from app.cli import cli
    from db.models import Candidate, CandidateScore, ModelKind, ModelStatus, ModelVersion
    from tests.conftest import TLDR
    from training.registry import activate

    run = CliRunner().invoke
    posts = env / "posts.jsonl"
    posts.write_text("".join((TLDR / "posts_test400.jsonl").open().readlines()[:5]))
    assert run(cli, ["import", "documents", str(posts)]).exit_code == 0
    assert run(cli, ["import", "documents", str(TLDR / "comparisons_axis_valid.jsonl")]).exit_code == 0
    trained = run(cli, ["train", "ranker", "--name", "rk", "--backbone", str(tiny_encoder), "--max-length", "96"])
    assert trained.exit_code == 0, trained.output
    with ctx.transaction() as db:
        tiny = ModelVersion(kind=ModelKind.POLICY, name="tiny", base_model=str(tiny_lm), round=0)
        db.add(tiny)
        db.flush()
        activate(db, tiny)
    result = run(cli, ["slic", "round", "--judge", "rk", "--docs", "3", "--eval-docs", "2", "--per-doc", "3",
                       "--name", "tiny-r1", "--activate", "--json"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert out["model_version"] == "tiny-r1" and out["pairs"] > 0
    assert 0 <= out["evaluation"]["ranker_new_vs_previous_win_rate"] <= 1
    with ctx.transaction() as db:
        new = db.scalar(select(ModelVersion).where(ModelVersion.name == "tiny-r1"))
        assert new.status == ModelStatus.ACTIVE and new.parent.name == "tiny" and new.round == 1
        assert Path(new.artifact_path, "adapter_config.json").exists()
        assert new.metrics["evaluation"]["previous"] == "tiny" and new.data_snapshot["documents"] >= 1
        sampled = db.scalar(select(func.count(Candidate.id)).where(Candidate.model_version_id == db.scalar(
            select(ModelVersion.id).where(ModelVersion.name == "tiny"))))
        ranked = db.scalar(select(func.count(CandidateScore.id)).where(CandidateScore.rank == 1))
        assert sampled >= 2 and ranked >= 1


def test_several_processes_train_one_adapter(tiny_lm: Path, tmp_path: Path) -> None:
    """Under `accelerate launch` every process runs the shared-prefix step inside the wrapper
    that averages gradients: two CPU processes under torchrun train the adapter that one process
    gets by accumulating their batches, and only one of them saves it."""
    import os
    import subprocess
    import sys

    from safetensors.torch import load_file

    script = tmp_path / "train.py"
    script.write_text(
        "import sys\nfrom pathlib import Path\nfrom tests.test_slic import EXAMPLES\n"
        "from training.slic.config import SlicConfig\nfrom training.slic.trainer import train_slic\n"
        "cfg = SlicConfig(lora_r=4, lora_dropout=0.0, batch_size=2, learning_rate=1e-3, epochs=2,\n"
        "                 grad_accum=int(sys.argv[3]))\n"
        "train_slic(sys.argv[1], EXAMPLES * 4, cfg, out=Path(sys.argv[2]), device='cpu', progress=False)\n")
    run_env = {**os.environ, "ACCELERATE_USE_CPU": "true", "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    for launch, out, accumulate in (
            ([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2"],
             tmp_path / "two" / "adapter", "1"),
            ([sys.executable], tmp_path / "one" / "adapter", "2")):
        done = subprocess.run([*launch, str(script), str(tiny_lm), str(out), accumulate], capture_output=True,
                              text=True, env=run_env, timeout=600, check=False)
        assert done.returncode == 0, done.stderr[-3000:]
    two, one = (load_file(tmp_path / n / "adapter" / "adapter_model.safetensors") for n in ("two", "one"))
    assert two.keys() == one.keys() and any("lora_B" in k for k in two)
    # compare what the adapter does, B·A per layer: float rounding (the processes sum in another
    # order) moves A's near-zero gradients, which Adam's normalised step magnifies, while B is small
    for key in [k for k in two if "lora_A" in k]:
        b_key = key.replace("lora_A", "lora_B")
        delta_two, delta_one = two[b_key] @ two[key], one[b_key] @ one[key]
        assert float(delta_one.norm()) > 1e-4, key  # it learned (B starts at zero)
        assert float((delta_two - delta_one).norm()) < 0.01 * float(delta_one.norm()), key
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == ["adapter"]  # no leftovers of a second save
