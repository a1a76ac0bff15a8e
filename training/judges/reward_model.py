"""The pointwise reward model: a pretrained transformer with a scalar head.

Loss (Llama 2): -log σ(r(x, y+) - r(x, y-) - m), with m the pair's margin when margins are on,
averaged over pairs (weighted by the export's weights when asked). A batch holds the pairs of a
few documents and scores each distinct (document, summary) once: TL;DR comparisons reuse the
same summaries in several pairs (7,260 pairs over 5,057 distinct summaries), so chosen and
rejected sides scored together take about a third of the forward passes of two per pair, and
the post of those summaries passes through the backbone once (`judge_inputs`).
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from training.judges.candidate_ranking import Ranking, rank_by_scores
from training.judges.config import JudgeConfig
from training.judges.pairs import PreferencePair, document_batches
from training.judges.scalar_model import ScalarJudge, chunks_by_document
from training.loop import StepOutput


def preference_loss(chosen: torch.Tensor, rejected: torch.Tensor, margin: torch.Tensor | None = None,
                    weight: torch.Tensor | None = None) -> torch.Tensor:
    """-log σ(r+ - r- - m), averaged over pairs (a weighted mean when weights are given)."""
    diff = chosen - rejected - (margin if margin is not None else 0.0)
    losses = -F.logsigmoid(diff)
    if weight is None:
        return losses.mean()
    return (losses * weight).sum() / weight.sum().clamp_min(1e-8)


@dataclass(frozen=True)
class ScoredBatch:
    """Distinct (document, summary) inputs and, per pair, the positions of its two sides."""

    documents: list[str]
    texts: list[str]
    chosen: torch.Tensor
    rejected: torch.Tensor
    margin: torch.Tensor
    weight: torch.Tensor


def group_batches(pairs: Sequence[PreferencePair], batch_texts: int, seed: int) -> list[ScoredBatch]:
    """Batches of whole documents with about `batch_texts` distinct inputs each."""
    def distinct(doc_pairs: list[PreferencePair]) -> int:
        return len({t for p in doc_pairs for t in (p.chosen, p.rejected)})

    return [_scored_batch(b) for b in document_batches(pairs, distinct, batch_texts, seed)]


def _scored_batch(pairs: list[PreferencePair]) -> ScoredBatch:
    index: dict[tuple[str, str], int] = {}
    for p in pairs:
        for text in (p.chosen, p.rejected):
            index.setdefault((p.prompt, text), len(index))
    inputs = list(index)
    return ScoredBatch(
        documents=[d for d, _ in inputs], texts=[t for _, t in inputs],
        chosen=torch.tensor([index[(p.prompt, p.chosen)] for p in pairs]),
        rejected=torch.tensor([index[(p.prompt, p.rejected)] for p in pairs]),
        margin=torch.tensor([p.margin for p in pairs], dtype=torch.float32),
        weight=torch.tensor([p.weight for p in pairs], dtype=torch.float32))


class RewardScorer(ScalarJudge):
    """The reward model: r(document, summary)."""

    kind = "reward"
    training_batches = staticmethod(group_batches)

    @torch.no_grad()
    def score(self, documents: Sequence[str], texts: Sequence[str], batch_size: int = 32) -> list[float]:
        self.model.eval()
        scores = [0.0] * len(texts)
        for chunk in chunks_by_document(documents, batch_size):
            for k, score in zip(chunk, self.rewards([documents[k] for k in chunk], [texts[k] for k in chunk]).tolist(),
                                strict=True):
                scores[k] = score
        return scores

    def rewards(self, documents: Sequence[str], texts: Sequence[str], model: torch.nn.Module | None = None
                ) -> torch.Tensor:
        return self.part_scores(documents, [[t] for t in texts], model)[:, 0]

    def batch_loss(self, batch: ScoredBatch, cfg: JudgeConfig, model: torch.nn.Module | None = None) -> StepOutput:
        scores = self.rewards(batch.documents, batch.texts, model)
        dev = scores.device
        chosen, rejected = scores[batch.chosen.to(dev)], scores[batch.rejected.to(dev)]
        loss = preference_loss(chosen, rejected, batch.margin.to(dev) if cfg.use_margin else None,
                               batch.weight.to(dev) if cfg.use_weight else None)
        return StepOutput(loss, len(batch.chosen), {"acc": float((chosen > rejected).float().mean())})

    def prefer(self, comparisons: Sequence[tuple[str, str, str]], batch_size: int = 32) -> list[float]:
        """σ(r(a) - r(b)) for each (document, a, b), each distinct (document, summary) scored once."""
        index: dict[tuple[str, str], int] = {}
        for doc, a, b in comparisons:
            for text in (a, b):
                index.setdefault((doc, text), len(index))
        inputs = list(index)
        scores = self.score([d for d, _ in inputs], [t for _, t in inputs], batch_size)
        return [1 / (1 + math.exp(scores[index[(doc, b)]] - scores[index[(doc, a)]])) for doc, a, b in comparisons]

    def rank_flagged(self, prompt: str, texts: list[str], demoted: list[bool]) -> Ranking:
        """Score and sort: the best against every other candidate."""
        return rank_by_scores(self.score([prompt] * len(texts), texts), demoted)
