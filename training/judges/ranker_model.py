"""The pairwise ranking model: (document, summary A, summary B) -> P(A better than B).

One backbone reads the post and both summaries together, the two summaries attending to each
other and to the post, so it can compare them directly — the SLiC-HF paper's ranker, which
beats its pointwise reward model. The logit of A ≻ B is the scalar head on A's pooled tokens
minus the head on B's: the head learns what a better summary looks like, the joint reading
learns it relative to the other one. Every pair is trained in both orders with opposite
labels, so the model cannot learn a position; at inference both orders are scored and
averaged, so P(A ≻ B) = 1 - P(B ≻ A) exactly.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from training.judges.candidate_ranking import Ranking, tournament
from training.judges.config import JudgeConfig
from training.judges.pairs import PreferencePair, document_batches
from training.judges.scalar_model import ScalarJudge, chunks_by_document
from training.loop import StepOutput


@dataclass(frozen=True)
class OrderedBatch:
    """Each pair twice: (chosen, rejected) labelled 1 and (rejected, chosen) labelled 0."""

    documents: list[str]
    segments: list[tuple[str, str]]
    labels: torch.Tensor
    weight: torch.Tensor


def ordered_batches(pairs: Sequence[PreferencePair], batch_texts: int, seed: int) -> list[OrderedBatch]:
    """Batches of whole documents with about `batch_texts` ordered comparisons each."""
    return [OrderedBatch(
        documents=[p.prompt for p in chunk for _ in range(2)],
        segments=[s for p in chunk for s in ((p.chosen, p.rejected), (p.rejected, p.chosen))],
        labels=torch.tensor([1.0, 0.0] * len(chunk)),
        weight=torch.tensor([p.weight for p in chunk for _ in range(2)], dtype=torch.float32))
        for chunk in document_batches(pairs, lambda doc_pairs: 2 * len(doc_pairs), batch_texts, seed)]


class PairwiseRanker(ScalarJudge):
    """The ranking model: head(A) - head(B), both read beside each other and the post."""

    kind = "ranker"
    training_batches = staticmethod(ordered_batches)

    def logits(self, documents: Sequence[str], segments: Sequence[tuple[str, str]],
               model: torch.nn.Module | None = None) -> torch.Tensor:
        """The logit of A ≻ B for each (document, (A, B)), in that one order."""
        scores = self.part_scores(documents, segments, model)
        return scores[:, 0] - scores[:, 1]

    def batch_loss(self, batch: OrderedBatch, cfg: JudgeConfig, model: torch.nn.Module | None = None) -> StepOutput:
        logits = self.logits(batch.documents, batch.segments, model)
        labels = batch.labels.to(logits.device)
        weight = batch.weight.to(logits.device) if cfg.use_weight else None
        loss = F.binary_cross_entropy_with_logits(logits, labels, weight=weight)
        return StepOutput(loss, len(labels) // 2, {"acc": float(((logits > 0).float() == labels).float().mean())})

    @torch.no_grad()
    def prefer(self, comparisons: Sequence[tuple[str, str, str]], batch_size: int = 32) -> list[float]:
        """P(a ≻ b) for each (document, a, b), the average over both orders."""
        self.model.eval()
        probs = [0.0] * len(comparisons)
        for chunk in chunks_by_document([d for d, _, _ in comparisons], max(1, batch_size // 2)):
            docs = [comparisons[k][0] for k in chunk for _ in range(2)]
            segments = [s for k in chunk for s in ((comparisons[k][1], comparisons[k][2]),
                                                   (comparisons[k][2], comparisons[k][1]))]
            p = torch.sigmoid(self.logits(docs, segments)).tolist()
            for j, k in enumerate(chunk):
                probs[k] = (p[2 * j] + 1 - p[2 * j + 1]) / 2
        return probs

    def rank_flagged(self, prompt: str, texts: list[str], demoted: list[bool]) -> Ranking:
        """A tournament: m - 1 comparisons for m candidates."""
        return tournament(len(texts), lambda games: self.prefer([(prompt, texts[a], texts[b]) for a, b in games]),
                          demoted)
