"""Reward model and pairwise ranking model: loss, inputs, ranking, splits, training, storage."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from annotate.errors import InvalidInput
from tests.conftest import TLDR
from training.artifacts import atomic_dir
from training.errors import CheckpointMismatch
from training.judges.candidate_ranking import rank_by_scores, ranking_scores, tournament
from training.judges.collator import JudgeCollator
from training.judges.config import JudgeConfig
from training.judges.pairs import PreferencePair, read_pairs, split_by_document, split_newest_round
from training.judges.ranker_model import PairwiseRanker, ordered_batches
from training.judges.reward_model import RewardScorer, group_batches, preference_loss
from training.judges.scalar_model import SIMILARITY_SCALE
from training.judges.trainer import load_judge, train_judge


def test_preference_loss_by_hand() -> None:
    chosen, rejected = torch.tensor([2.0, 0.0]), torch.tensor([1.0, 1.0])
    # -log σ(1) = log(1 + e^-1) = 0.313262, -log σ(-1) = log(1 + e) = 1.313262
    assert preference_loss(chosen, rejected).item() == pytest.approx((0.313262 + 1.313262) / 2, abs=1e-5)
    # a margin of 0.5 on the first pair: -log σ(0.5) = 0.474077
    margin = torch.tensor([0.5, 0.0])
    assert preference_loss(chosen, rejected, margin).item() == pytest.approx((0.474077 + 1.313262) / 2, abs=1e-5)
    weight = torch.tensor([1.0, 3.0])
    assert preference_loss(chosen, rejected, weight=weight).item() == pytest.approx(
        (0.313262 + 3 * 1.313262) / 4, abs=1e-5)


def _pairs(docs: int, per_doc: int = 3, rounds: int = 1) -> list[PreferencePair]:
    return [PreferencePair(f"post {d}", f"good summary {d}.{k}", f"bad summary {d}.{k}", round=d % rounds)
            for d in range(docs) for k in range(per_doc)]


def test_split_by_document_never_puts_a_post_on_both_sides() -> None:
    train, test = split_by_document(_pairs(50), 0.2, seed=3)
    assert {p.prompt for p in train}.isdisjoint({p.prompt for p in test})
    assert len({p.prompt for p in test}) == 10 and len(train) + len(test) == 150
    # a post of the newest round that also appears in an older one moves to the test side whole
    pairs = _pairs(6, rounds=2) + [PreferencePair("post 1", "older a", "older b", round=0)]
    train, test = split_newest_round(pairs)
    assert {p.prompt for p in test} == {"post 1", "post 3", "post 5"}
    assert all(p.prompt not in {"post 1", "post 3", "post 5"} for p in train)
    with pytest.raises(ValueError, match="two or more rounds"):
        split_newest_round(_pairs(4))


def test_bad_pair_files_name_line_and_field(tmp_path: Path) -> None:
    path = tmp_path / "pairs.jsonl"
    path.write_text(json.dumps({"prompt": "p", "chosen": "a", "rejected": "b"}) + "\n"
                    + json.dumps({"prompt": "p", "chosen": "a", "margin": "big"}) + "\n")
    with pytest.raises(InvalidInput) as err:
        read_pairs(path)
    assert (err.value.line, err.value.field) == (2, "rejected")
    path.write_text(json.dumps({"prompt": "p", "chosen": "a", "rejected": "b", "margin": "big"}) + "\n")
    with pytest.raises(InvalidInput, match=r"pairs.jsonl:1: field 'margin': expected a number"):
        read_pairs(path)


@pytest.mark.parametrize("m", [1, 2, 5, 8])
def test_tournament_takes_m_minus_1_games_and_finds_the_strongest(m: int) -> None:
    strength = [((i * 7) % m) / m for i in range(m)]  # a permutation, so one strongest
    calls = []

    def prefer(games):  # type: ignore[no-untyped-def]
        calls.append(list(games))
        return [1 / (1 + math.exp(strength[b] - strength[a])) for a, b in games]

    result = tournament(m, prefer)
    assert len(result.pairs) == m - 1
    assert result.best == max(range(m), key=strength.__getitem__)
    assert all(strength[p.better] > strength[p.worse] and p.confidence > 0.5 for p in result.pairs)
    # every candidate but the winner loses exactly once; rounds are batched
    assert sorted(p.worse for p in result.pairs) == sorted(set(range(m)) - {result.best})
    assert len(calls) == math.ceil(math.log2(m)) if m > 1 else not calls
    if m == 5:  # the odd one out plays in a later round: c1-c2, c3-c4, then the winners and c5
        assert calls[0] == [(0, 1), (2, 3)]


def test_rank_by_scores_pairs_the_best_with_the_rest() -> None:
    result = rank_by_scores([0.1, 2.0, -1.0])
    assert result.best == 1
    assert [(p.better, p.worse) for p in result.pairs] == [(1, 0), (1, 2)]
    assert result.pairs[0].confidence == pytest.approx(1 / (1 + math.exp(0.1 - 2.0)))


def test_a_candidate_that_repeats_the_prompt_layout_loses_to_every_summary() -> None:
    from annotate.export import format_post, repeats_layout

    texts = ["my dog barks at night", format_post("pets", "Dog", "my dog barks all night long"), "dog is loud",
             "TITLE: Dog POST: my dog"]
    demoted = [repeats_layout(t) for t in texts]
    assert demoted == [False, True, False, True]
    # the reward model likes the copy best; the copy still ranks below both summaries
    by_score = rank_by_scores([0.5, 3.0, 0.2, 2.0], demoted)
    assert by_score.best == 0
    assert [(p.better, p.worse, round(p.confidence, 3)) for p in by_score.pairs] == [
        (0, 2, round(1 / (1 + math.exp(0.2 - 0.5)), 3)), (0, 1, 1.0), (0, 3, 1.0)]
    # a ranker that prefers longer texts picks a copy over a summary; the rule overturns that
    by_games = tournament(4, lambda games: [0.9 if len(texts[a]) > len(texts[b]) else 0.1 for a, b in games], demoted)
    assert not demoted[by_games.best] and len(by_games.pairs) == 3
    assert all(not demoted[p.better] for p in by_games.pairs if demoted[p.better] != demoted[p.worse])
    assert [p.confidence for p in by_games.pairs if demoted[p.worse] and not demoted[p.better]] == [1.0, 1.0]
    # stored ranks (calibra score, sample-rank) keep the restatements last, the reward model's order aside
    stored = ranking_scores(by_score.best, [p.better for p in by_score.pairs], [0.5, 3.0, 0.2, 2.0], texts)
    assert [rank for _, rank in stored] == [1, 3, 2, 4] and stored[1][0] == 3.0
    with pytest.raises(ValueError, match="3 demotion flags for 4 candidates"):
        rank_by_scores([0.0] * 4, demoted[:3])


def test_no_human_summary_of_the_tldr_comparisons_repeats_the_layout() -> None:
    from annotate.export import repeats_layout

    rows = [json.loads(line) for line in (TLDR / "pairs_train.jsonl").read_text().splitlines()]
    assert len(rows) == 7260 and all(repeats_layout(r["prompt"]) for r in rows)
    assert not any(repeats_layout(r[side]) for r in rows for side in ("chosen", "rejected"))


def test_inputs_keep_the_summary_whole(tiny_encoder: Path, tiny_lm: Path) -> None:
    from training.loading import load_tokenizer

    post, summary = "word " * 800, "the summary that must survive intact"
    enc = load_tokenizer(tiny_encoder, padding_side="right")
    want = enc(summary, add_special_tokens=False)["input_ids"]
    batch = JudgeCollator(enc, max_length=64, read_post=True)([post, "short post"], [[summary], [summary]])
    (row, start, end), = batch.parts[0]
    assert batch.input_ids[row, start:end - 1].tolist() == want
    assert end == 64 and batch.position_ids[row, end - 1].item() == 63  # the post was cut to fit 64
    assert batch.token_type_ids is not None and batch.token_type_ids[row, start].item() == 1
    (short_row, s2, _), = batch.parts[1]
    assert short_row != row and s2 < start  # the short post is not stretched
    batch = JudgeCollator(enc, max_length=64)([post], [[summary]])  # two towers: each its own sentence
    (row, start, end), = batch.parts[0]
    assert batch.input_ids[row, start:end].tolist() == [enc.cls_token_id, *want, enc.sep_token_id]
    assert batch.position_ids[row, start].item() == 0 and batch.posts[0][2] == 64
    dec = load_tokenizer(tiny_lm, padding_side="right")
    batch = JudgeCollator(dec, max_length=64, encoder=False, read_post=True)([post], [[summary]])
    want = dec(summary, add_special_tokens=False)["input_ids"]
    (row, start, end), = batch.parts[0]
    assert end == 64 and batch.input_ids[row, start:end].tolist() == want


@pytest.mark.parametrize("read_post", [True, False])
def test_summaries_of_one_post_read_it_once_and_not_each_other(read_post: bool, tiny_encoder: Path) -> None:
    from training.loading import load_tokenizer

    tok = load_tokenizer(tiny_encoder, padding_side="right")
    post = "my landlord kept the deposit after I moved out " * 3
    batch = JudgeCollator(tok, max_length=128, read_post=read_post)(
        [post, post, "another post"], [["first"], ["second one"], ["third"]])
    assert batch.input_ids.shape[0] == 2  # one row per post
    (r1, s1, e1), = batch.parts[0]
    (r2, s2, e2), = batch.parts[1]
    mask = batch.attention_mask[r1, 0]
    assert r1 == r2 and mask[s2, s1:e1].sum() == 0 and mask[s1, s2:e2].sum() == 0  # summaries never meet
    assert bool(mask[s1, 1:5].all()) is read_post and not mask[1, s1:e1].any()  # the post never reads a summary
    assert batch.position_ids[r1, s1] == batch.position_ids[r2, s2]  # each starts where the other does
    assert batch.posts[0] == batch.posts[1] != batch.posts[2]


def test_two_towers_embed_the_summary_as_the_sentence_encoder_does(tiny_encoder: Path) -> None:
    from transformers import AutoModel

    judge = RewardScorer.load(tiny_encoder, JudgeConfig(max_length=96))
    encoder = AutoModel.from_pretrained(tiny_encoder).eval()
    post, summary = "a post about a dog " * 4, "the dog ran away"
    batch = judge.collate([post, post], [[summary], ["another"]])
    with torch.no_grad():
        inputs = batch.model_inputs(torch.device("cpu"))
        hidden = judge.model.eval()(**inputs, output_hidden_states=True).hidden_states[-1]
        alone = encoder(**judge.tokenizer(summary, return_tensors="pt")).last_hidden_state[0].mean(0)
    (row, start, end), = batch.parts[0]
    assert torch.allclose(hidden[row, start:end].mean(0), alone, atol=1e-5)
    # a fresh head starts as a scaled cosine of summary and post
    (prow, pstart, pend) = batch.posts[0]
    cos = F.cosine_similarity(hidden[row, start:end].mean(0), hidden[prow, pstart:pend].mean(0), dim=0)
    assert judge.rewards([post], [summary]).item() == pytest.approx(SIMILARITY_SCALE * cos.item(), abs=1e-4)


@pytest.mark.parametrize(("kind", "read_post"), [("encoder", True), ("encoder", False), ("decoder", True)])
def test_packed_scores_equal_one_input_at_a_time(kind: str, read_post: bool, tiny_encoder: Path, tiny_lm: Path) -> None:
    torch.manual_seed(0)
    judge = RewardScorer.load(tiny_encoder if kind == "encoder" else tiny_lm, JudgeConfig(max_length=96,
                                                                                         read_post=read_post))
    judge.model.eval()
    dog = "a post about a dog " * 4
    docs = [dog, dog, "my sister borrowed my car", dog]
    texts = ["the dog ran away", "a cat sat on a mat all day long", "sister took the car", ""]
    with torch.no_grad():
        packed = judge.rewards(docs, texts)
        alone = torch.cat([judge.rewards([d], [t]) for d, t in zip(docs, texts, strict=True)])
    assert torch.allclose(packed, alone, atol=1e-5)
    assert judge.score(docs, texts, batch_size=3) == pytest.approx(alone.tolist(), abs=1e-5)


def test_ranker_is_symmetric_by_construction(tiny_encoder: Path) -> None:
    torch.manual_seed(1)
    ranker = PairwiseRanker.load(tiny_encoder, JudgeConfig(max_length=64))
    doc, a, b = "a post about a dog", "the dog ran away", "a cat sat on a mat all day"
    p_ab, p_ba = ranker.prefer([(doc, a, b), (doc, b, a)])
    assert p_ab + p_ba == pytest.approx(1.0, abs=1e-6)
    with torch.no_grad():
        raw = torch.sigmoid(ranker.logits([doc, doc], [(a, b), (b, a)]))
    assert abs(float(raw.sum()) - 1.0) > 1e-4  # one order alone is not symmetric


def _synthetic(n: int) -> list[PreferencePair]:
    """A preference a model can learn: the chosen summary calls the post accurate."""
    topics = ["a dog", "my landlord", "a job offer", "the wedding", "my sister", "a used car", "the exam", "rent"]
    return [PreferencePair(f"POST: a story about {topics[i % 8]} number {i}",
                           f"accurate helpful summary of {topics[i % 8]}",
                           f"wrong misleading summary of {topics[i % 8]}",
                           document=str(i)) for i in range(n)]


@pytest.mark.parametrize("kind", ["reward", "ranker"])
def test_a_judge_learns_a_learnable_preference(kind: str, tiny_encoder: Path, tmp_path: Path) -> None:
    train, test = split_by_document(_synthetic(64), 0.25, seed=0)
    cfg = JudgeConfig(backbone=str(tiny_encoder), max_length=48, learning_rate=2e-3, epochs=4, batch_texts=8,
                      warmup_ratio=0.0)
    result = train_judge(kind, train, test, cfg, out=tmp_path / kind, progress=False)
    assert result.metrics["test"]["accuracy"] >= 0.9
    saved = json.loads((tmp_path / kind / "judge.json").read_text())
    assert saved["kind"] == kind and saved["data_snapshot"]["pairs"] == len(train)
    again = load_judge(kind, tmp_path / kind)
    from training.judges.trainer import evaluate_judge

    assert evaluate_judge(again, test)["accuracy"] == result.metrics["test"]["accuracy"]
    assert [p.name for p in tmp_path.iterdir()] == [kind]  # no temporary or checkpoint folders left
    with pytest.raises(ValueError, match=f"is a {kind} model"):
        load_judge("ranker" if kind == "reward" else "reward", tmp_path / kind)


def test_a_ranker_warm_starts_from_a_reward_model(tiny_encoder: Path, tmp_path: Path) -> None:
    train, test = split_by_document(_synthetic(48), 0.25, seed=0)
    cfg = JudgeConfig(backbone=str(tiny_encoder), max_length=48, learning_rate=2e-3, epochs=3, batch_texts=8,
                      warmup_ratio=0.0)
    train_judge("reward", train, test, cfg, out=tmp_path / "rm", progress=False)
    frozen = JudgeConfig(**{**cfg.as_dict(), "freeze_layers": 1, "epochs": 1})  # the new run's settings apply
    result = train_judge("ranker", train, test, frozen, out=tmp_path / "rk", init=tmp_path / "rm", progress=False)
    assert not any(p.requires_grad for n, p in result.judge.model.named_parameters() if ".layer.0." in n)
    assert result.metrics["test"]["accuracy"] >= 0.9
    assert json.loads((tmp_path / "rk" / "judge.json").read_text())["init"] == str(tmp_path / "rm")


def test_reward_batches_score_each_distinct_summary_once() -> None:
    pairs = [PreferencePair("p1", "a", "b"), PreferencePair("p1", "a", "c"), PreferencePair("p1", "b", "c"),
             PreferencePair("p2", "a", "b")]
    batches = group_batches(pairs, batch_texts=16, seed=0)
    assert len(batches) == 1 and len(batches[0].texts) == 5  # p1: a, b, c; p2: a, b
    b = batches[0]
    chosen = [(b.documents[i], b.texts[i]) for i in b.chosen.tolist()]
    rejected = [(b.documents[i], b.texts[i]) for i in b.rejected.tolist()]
    expected = sorted(((p.prompt, p.chosen), (p.prompt, p.rejected)) for p in pairs)
    assert sorted(zip(chosen, rejected, strict=True)) == expected


def test_ranker_batches_hold_whole_documents_in_both_orders() -> None:
    pairs = _pairs(7, per_doc=3)
    batches = ordered_batches(pairs, batch_texts=8, seed=0)
    seen = [d for b in batches for d in dict.fromkeys(b.documents)]
    assert sorted(seen) == sorted({p.prompt for p in pairs})  # every document in exactly one batch
    assert all(len(b.segments) <= 8 for b in batches)
    labelled = {(d, s, float(y)) for b in batches for d, s, y in zip(b.documents, b.segments, b.labels, strict=True)}
    assert labelled == {(p.prompt, (p.chosen, p.rejected), 1.0) for p in pairs} | {
        (p.prompt, (p.rejected, p.chosen), 0.0) for p in pairs}


def test_an_interrupted_run_resumes_where_it_stopped(tiny_encoder: Path, tmp_path: Path) -> None:
    train = _synthetic(24)
    cfg = JudgeConfig(backbone=str(tiny_encoder), max_length=48, learning_rate=1e-3, epochs=2, batch_texts=8,
                      checkpoint_every=1)
    whole = train_judge("reward", train, [], cfg, out=tmp_path / "a" / "rm", progress=False)
    stopped = train_judge("reward", train, [], cfg, out=tmp_path / "b" / "rm", progress=False, stop_after=3)
    assert stopped.metrics.get("interrupted") and stopped.path is None
    assert not (tmp_path / "b" / "rm").exists() and any((tmp_path / "b").glob(".checkpoint-reward-*"))
    resumed = train_judge("reward", train, [], cfg, out=tmp_path / "b" / "rm", progress=False)
    for (name, x), (_, y) in zip(whole.judge.model.state_dict().items(), resumed.judge.model.state_dict().items(),
                                 strict=True):
        assert torch.allclose(x, y, atol=1e-6), name
    assert not any((tmp_path / "b").glob(".checkpoint-reward-*"))


def test_artifacts_are_replaced_whole_or_not_at_all(tmp_path: Path) -> None:
    dest = tmp_path / "model"
    with atomic_dir(dest) as tmp:
        (tmp / "weights").write_text("v1")
    with pytest.raises(RuntimeError), atomic_dir(dest) as tmp:
        (tmp / "weights").write_text("half of v2")
        raise RuntimeError("disk full")
    assert (dest / "weights").read_text() == "v1"
    assert [p.name for p in tmp_path.iterdir()] == ["model"]


def test_lora_reward_model_on_a_causal_backbone_trains_only_adapters_and_head(tiny_lm: Path) -> None:
    scorer = RewardScorer.load(tiny_lm, JudgeConfig(lora_r=4, max_length=64))
    trainable = {n for n, p in scorer.model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n or "score" in n for n in trainable)
    assert any("score" in n for n in trainable)
    batch = group_batches(_synthetic(4), batch_texts=8, seed=0)[0]
    out = scorer.batch_loss(batch, JudgeConfig())
    out.loss.backward()
    assert out.examples == 4 and math.isfinite(out.loss.item())


@pytest.mark.slow
def test_judges_train_from_the_apps_own_preferences(env, ctx, tiny_encoder: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Real TL;DR comparisons imported → exported → both judges trained → candidates scored."""
    from sqlalchemy import func, select
    from typer.testing import CliRunner

    from app.cli import cli
    from db.models import CandidateScore, Judgement, ModelVersion

    run = CliRunner().invoke
    assert run(cli, ["import", "documents", str(TLDR / "comparisons_axis_valid.jsonl")]).exit_code == 0
    common = ["--backbone", str(tiny_encoder), "--max-length", "96", "--epochs", "1", "--json"]
    for kind in ("reward", "ranker"):
        result = run(cli, ["train", kind, "--name", f"{kind}-test", *common])
        assert result.exit_code == 0, result.output
        out = json.loads(result.stdout)
        assert out["train_pairs"] > 300 and out["test_pairs"] > 50 and 0 <= out["accuracy"] <= 1
        scored = run(cli, ["score", "--model", f"{kind}-test", "--limit", "20", "--json"])
        assert scored.exit_code == 0, scored.output
    with ctx.transaction() as db:
        versions = {v.name: v for v in db.scalars(select(ModelVersion))}
        rm, rk = versions["reward-test"], versions["ranker-test"]
        judged = db.scalar(select(func.count(Judgement.id)))
        assert judged > 700 and rm.data_snapshot["judgements"] == judged and rm.data_snapshot["split"] == "document"
        assert rm.metrics["test"]["pairs"] > 50 and Path(rm.artifact_path, "judge.json").exists()
        for version in (rm, rk):
            ranks = db.execute(select(CandidateScore.rank, func.count()).where(
                CandidateScore.model_version_id == version.id).group_by(CandidateScore.rank)).all()
            assert dict(ranks)[1] == 20  # one best per document
    pairs = tmp_path / "pairs.jsonl"
    assert run(cli, ["export", "preferences", "--out", str(pairs)]).exit_code == 0
    evaluated = run(cli, ["eval", "ranker", "--model", "ranker-test", "--data", str(pairs), "--limit", "40", "--json"])
    assert evaluated.exit_code == 0, evaluated.output
    assert json.loads(evaluated.stdout)["pairs"] == 40
    bad = run(cli, ["eval", "reward", "--model", "ranker-test", "--data", str(pairs)])
    assert bad.exit_code != 0


def test_freezing_the_lowest_layers(tiny_encoder: Path) -> None:
    scorer = RewardScorer.load(tiny_encoder, JudgeConfig(freeze_layers=1))
    trainable = {n for n, p in scorer.model.named_parameters() if p.requires_grad}
    assert not any("embeddings" in n or ".layer.0." in n for n in trainable)
    assert any(".layer.1." in n for n in trainable) and any(n.startswith("classifier") for n in trainable)


def test_the_head_can_learn_at_its_own_rate(tiny_encoder: Path) -> None:
    cfg = JudgeConfig(backbone=str(tiny_encoder), max_length=48, learning_rate=1e-7, head_learning_rate=1e-2,
                      batch_texts=8, warmup_ratio=0.0, schedule="constant")
    fresh = RewardScorer.load(tiny_encoder, cfg)
    before = {n: p.detach().clone() for n, p in fresh.model.named_parameters()}
    trained = train_judge("reward", _synthetic(16), [], cfg, out=None, progress=False).judge
    moved = {n: float((p.detach() - before[n]).abs().max()) for n, p in trained.model.named_parameters()}
    assert moved["classifier.weight"] > 1e-3  # Adam moves each weight by about its rate per step
    assert max(v for n, v in moved.items() if not n.startswith("classifier")) < 1e-5


def test_a_checkpoint_resumes_only_with_the_process_count_that_wrote_it(tiny_encoder: Path, tmp_path: Path) -> None:
    train = _synthetic(24)
    cfg = JudgeConfig(backbone=str(tiny_encoder), max_length=48, batch_texts=8, checkpoint_every=1)
    train_judge("reward", train, [], cfg, out=tmp_path / "rm", progress=False, stop_after=1)
    progress = next(tmp_path.glob(".checkpoint-reward-*")) / "progress.json"
    assert json.loads(progress.read_text()) == {"optimizer_steps": 1, "processes": 1}
    progress.write_text(json.dumps({"optimizer_steps": 1, "processes": 2}))  # as two GPUs would have left it
    with pytest.raises(CheckpointMismatch, match="written by 2 process"):
        train_judge("reward", train, [], cfg, out=tmp_path / "rm", progress=False)
    assert not (tmp_path / "rm").exists()


def test_every_process_gets_the_same_number_of_batches() -> None:
    from training.loop import even_share

    assert even_share([0, 1, 2, 3, 4], 2) == [0, 1, 2, 3, 4, 0]
    assert even_share([0, 1, 2, 3], 2) == [0, 1, 2, 3]
    assert even_share([0], 3) == [0, 0, 0]
    assert even_share([7, 8], 1) == [7, 8]


@pytest.mark.parametrize("kind", ["reward", "ranker"])
def test_several_processes_train_one_model_and_register_it_once(kind: str, env: Path, tiny_encoder: Path) -> None:
    """`accelerate launch` on several devices runs the same command in every process: they must
    train one model together (the same one a single process gets by accumulating their batches)
    and register it once. Two CPU processes under torchrun stand in for two GPUs."""
    import os
    import subprocess
    import sys

    from transformers import AutoConfig, AutoTokenizer, BertModel

    # without dropout, the two runs see exactly the same arithmetic
    config = AutoConfig.from_pretrained(tiny_encoder, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    backbone = env / "encoder"
    BertModel.from_pretrained(tiny_encoder, config=config).save_pretrained(backbone)
    AutoTokenizer.from_pretrained(tiny_encoder).save_pretrained(backbone)
    data = env / "pairs.jsonl"
    data.write_text("".join(json.dumps({"prompt": p.prompt, "chosen": p.chosen, "rejected": p.rejected}) + "\n"
                            for p in _synthetic(40)))
    common = ["train", kind, "--data", str(data), "--backbone", str(backbone), "--batch-texts", "4",
              "--learning-rate", "1e-3", "--json"]
    from app.context import open_context

    open_context().engine.dispose()  # the database exists before the processes share it
    launch = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "-m", "app.cli"]
    run_env = {**os.environ, "ACCELERATE_USE_CPU": "true", "CALIBRA_MODELS_DIR": str(env / "models"),
               "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    two = subprocess.run([*launch, *common, "--name", "two"], capture_output=True, text=True, env=run_env,
                         timeout=600, check=False)
    assert two.returncode == 0, two.stderr[-3000:]
    assert json.loads(two.stdout)["model_version"] == "two"  # one process prints, one registers
    one = subprocess.run([sys.executable, "-m", "app.cli", *common, "--name", "one", "--grad-accum", "2"],
                         capture_output=True, text=True, env=run_env, timeout=600, check=False)
    assert one.returncode == 0, one.stderr[-3000:]

    from safetensors.torch import load_file

    from db.models import ModelKind, ModelVersion

    judges = env / "models" / "judges"
    weights_two, weights_one = (load_file(judges / n / "model.safetensors") for n in ("two", "one"))
    start = load_file(backbone / "model.safetensors")
    moved = max(float((weights_two[k] - start[k.removeprefix("bert.")]).abs().max()) for k in weights_two
                if k.removeprefix("bert.") in start)
    assert moved > 1e-3  # training changed the weights ...
    for name, tensor in weights_two.items():  # ... the same way in both runs
        assert torch.allclose(tensor, weights_one[name], atol=1e-5), name
    context = open_context()
    with context.transaction() as db:
        from sqlalchemy import select

        names = db.scalars(select(ModelVersion.name).where(ModelVersion.kind == ModelKind(kind))).all()
    context.engine.dispose()
    assert sorted(names) == ["one", "two"]
