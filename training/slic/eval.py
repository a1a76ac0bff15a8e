"""Is the new policy better? Held-out documents, judged by the ranking and the reward model.

For each document one sample from the new and one from the previous policy (same sampling
settings and seed), and the human reference when there is one. Reported per judge: win rate of
new over previous and of each policy over the reference, the length-controlled win rate (only
pairs whose lengths are within 20% of each other, where length cannot decide), mean length in
tokens and words, and the mean log-probability of the reference under each policy (a drift
check: calibration should not make the human summary unlikely). Win rates decide as the round's
ranking does: a sample that restates the prompt's layout loses to one that summarises, whatever
the judge says; the judge's own verdicts are reported beside them.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from annotate.export import repeats_layout, similar_length, words
from training.judges.candidate_ranking import overrule
from training.judges.scalar_model import ScalarJudge
from training.slic.collator import SlicCollator
from training.slic.loss import continuation_logprobs


def preferences(judge: ScalarJudge, posts: Sequence[str], a: Sequence[str], b: Sequence[str]) -> list[float]:
    """Per document, 1 if the judge prefers a, 0 if b, 0.5 for a tie."""
    probs = judge.prefer(list(zip(posts, a, b, strict=True)))
    return [1.0 if p > 0.5 else 0.0 if p < 0.5 else 0.5 for p in probs]


def win_rates(judge: ScalarJudge, posts: Sequence[str], a: Sequence[str],
              b: Sequence[str]) -> dict[str, Any]:
    """Win rate of a over b as the round's ranking decides: the judge, overruled where one side
    restates the prompt's layout (it loses); `judge_alone_win_rate` is the judge unruled."""
    alone = preferences(judge, posts, a, b)
    wins = [overrule(w, repeats_layout(x), repeats_layout(y)) for w, x, y in zip(alone, a, b, strict=True)]
    similar = [w for w, x, y in zip(wins, a, b, strict=True)
               if similar_length(words(x), words(y))]
    return {"win_rate": _mean(wins), "judge_alone_win_rate": _mean(alone), "pairs": len(wins),
            "length_controlled_win_rate": _mean(similar), "similar_length_pairs": len(similar)}


def _mean(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None


@torch.no_grad()
def mean_logprob(model: PreTrainedModel, collate: SlicCollator, prompts: Sequence[str], targets: Sequence[str],
                 batch_size: int = 8) -> float | None:
    """Mean summed log P(target | prompt) under a policy."""
    if not prompts:
        return None
    model.eval()
    device = next(model.parameters()).device
    total = 0.0
    for i in range(0, len(prompts), batch_size):
        b = collate.encode(prompts[i:i + batch_size], [[t] for t in targets[i:i + batch_size]]).to(device)
        total += float(continuation_logprobs(model, b.prompt_ids, b.prompt_mask, b.targets, b.target_mask).sum())
    return total / len(prompts)


def length_stats(tokenizer: PreTrainedTokenizerBase, texts: Sequence[str]) -> dict[str, float]:
    n = max(1, len(texts))
    return {"mean_words": sum(words(t) for t in texts) / n,
            "mean_tokens": sum(len(ids) for ids in tokenizer(list(texts), add_special_tokens=False)["input_ids"]) / n}


def compare_policies(judges: dict[str, ScalarJudge], posts: Sequence[str], new: Sequence[str],
                     previous: Sequence[str], references: Sequence[str | None]) -> dict[str, Any]:
    """Win rates of new over previous, and of both over the human reference, per judge."""
    with_ref = [i for i, r in enumerate(references) if r]
    out: dict[str, Any] = {}
    for name, judge in judges.items():
        result = {"new_vs_previous": win_rates(judge, posts, new, previous)}
        if with_ref:
            p = [posts[i] for i in with_ref]
            refs = [references[i] or "" for i in with_ref]
            result["new_vs_reference"] = win_rates(judge, p, [new[i] for i in with_ref], refs)
            result["previous_vs_reference"] = win_rates(judge, p, [previous[i] for i in with_ref], refs)
        out[name] = result
    return out


LEAD_WORDS = 30  # the copy-the-lead baseline: a post's first 30 words


def rouge_l(candidate: str, reference: str) -> float:
    """ROUGE-L F1 on lower-cased words: the longest common subsequence against the human
    reference, a yardstick that needs no judge."""
    a, b = candidate.lower().split(), reference.lower().split()
    if not a or not b:
        return 0.0
    prev = [0] * (len(b) + 1)
    for x in a:
        row = [0]
        for j, y in enumerate(b):
            row.append(prev[j] + 1 if x == y else max(prev[j + 1], row[j]))
        prev = row
    lcs = prev[-1]
    if lcs == 0:
        return 0.0
    precision, recall = lcs / len(a), lcs / len(b)
    return 2 * precision * recall / (precision + recall)


def rouge_against_references(texts: Mapping[str, Sequence[str]], posts: Sequence[str],
                             references: Sequence[str | None]) -> dict[str, float | None]:
    """Mean ROUGE-L of each policy's samples against the references, beside copying the lead."""
    with_ref = [i for i, r in enumerate(references) if r]
    if not with_ref:
        return {**{label: None for label in texts}, "lead": None}
    out: dict[str, float | None] = {
        label: sum(rouge_l(t[i], references[i] or "") for i in with_ref) / len(with_ref) for label, t in texts.items()}
    out["lead"] = sum(rouge_l(" ".join(posts[i].split()[:LEAD_WORDS]), references[i] or "")
                      for i in with_ref) / len(with_ref)
    return out
