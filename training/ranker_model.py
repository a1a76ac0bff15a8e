"""The pairwise ranking model: (document, summary A, summary B) -> P(A better than B).

One backbone with a scalar head reads both summaries and the post together (`A: … B: …`
first, the post after, cut when long), so attention can compare the two directly — the SLiC-HF
paper's ranker, which beats its pointwise reward model. Every pair is trained in both orders
with opposite labels, so the model cannot learn a position; at inference both orders are
scored and averaged, so P(A ≻ B) = 1 - P(B ≻ A) exactly.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from training.judge_config import JudgeConfig, ScalarJudge
from training.loop import StepOutput
from training.preference_data import PreferencePair


def pair_text(a: str, b: str) -> str:
    return f"A: {a.strip()}\nB: {b.strip()}"


@dataclass(frozen=True)
class OrderedBatch:
    """Each pair twice: (chosen, rejected) labelled 1 and (rejected, chosen) labelled 0."""

    documents: list[str]
    texts: list[str]
    labels: torch.Tensor
    weight: torch.Tensor


def ordered_batches(pairs: Sequence[PreferencePair], batch_texts: int, seed: int) -> list[OrderedBatch]:
    order = torch.randperm(len(pairs), generator=torch.Generator().manual_seed(seed)).tolist()
    per_batch = max(1, batch_texts // 2)
    batches = []
    for start in range(0, len(order), per_batch):
        chunk = [pairs[i] for i in order[start:start + per_batch]]
        batches.append(OrderedBatch(
            documents=[p.prompt for p in chunk for _ in range(2)],
            texts=[t for p in chunk for t in (pair_text(p.chosen, p.rejected), pair_text(p.rejected, p.chosen))],
            labels=torch.tensor([1.0, 0.0] * len(chunk)),
            weight=torch.tensor([p.weight for p in chunk for _ in range(2)], dtype=torch.float32)))
    return batches


class PairwiseRanker(ScalarJudge):
    """The ranking model: the head's output on `A: … B: …` + post is the logit of A ≻ B."""

    def batch_loss(self, batch: OrderedBatch, cfg: JudgeConfig, model: torch.nn.Module | None = None) -> StepOutput:
        logits = self.head(batch.documents, batch.texts, model)
        labels = batch.labels.to(logits.device)
        weight = batch.weight.to(logits.device) if cfg.use_weight else None
        loss = F.binary_cross_entropy_with_logits(logits, labels, weight=weight)
        return StepOutput(loss, len(labels) // 2, {"acc": float(((logits > 0).float() == labels).float().mean())})

    @torch.no_grad()
    def prefer(self, comparisons: Sequence[tuple[str, str, str]], batch_size: int = 32) -> list[float]:
        """P(a ≻ b) for each (document, a, b), the average over both orders."""
        self.model.eval()
        docs = [d for d, _, _ in comparisons for _ in range(2)]
        texts = [t for _, a, b in comparisons for t in (pair_text(a, b), pair_text(b, a))]
        probs: list[float] = []
        for i in range(0, len(texts), batch_size):
            probs.extend(torch.sigmoid(self.head(docs[i:i + batch_size], texts[i:i + batch_size])).tolist())
        return [(probs[2 * k] + 1 - probs[2 * k + 1]) / 2 for k in range(len(comparisons))]
