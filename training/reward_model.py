"""The pointwise reward model: a pretrained transformer with a scalar head.

Loss (Llama 2): -log σ(r(x, y+) - r(x, y-) - m), with m the pair's margin when margins are on,
averaged over pairs (weighted by the export's weights when asked). A batch holds the pairs of a
few documents and scores each distinct (document, summary) once: TL;DR comparisons reuse the
same summaries in several pairs (7,260 pairs over 5,057 distinct summaries), so chosen and
rejected sides scored together take about a third of the forward passes of two per pair.
"""
from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from training.judge_config import JudgeConfig, ScalarJudge
from training.loop import StepOutput
from training.preference_data import PreferencePair


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
    """Pairs grouped by document, documents shuffled, and filled into batches of about
    `batch_texts` distinct inputs (a document with more distinct summaries gets a batch of its
    own rather than being split, so its shared summaries stay in one forward pass)."""
    by_doc: dict[str, list[PreferencePair]] = defaultdict(list)
    for p in pairs:
        by_doc[p.key].append(p)
    keys = sorted(by_doc)
    random.Random(seed).shuffle(keys)
    batches, current, size = [], [], 0
    for key in keys:
        n = len({t for p in by_doc[key] for t in (p.chosen, p.rejected)})
        if current and size + n > batch_texts:
            batches.append(_scored_batch(current))
            current, size = [], 0
        current.extend(by_doc[key])
        size += n
    if current:
        batches.append(_scored_batch(current))
    return batches


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

    @torch.no_grad()
    def score(self, documents: Sequence[str], texts: Sequence[str], batch_size: int = 32) -> list[float]:
        self.model.eval()
        out: list[float] = []
        for i in range(0, len(texts), batch_size):
            out.extend(self.head(documents[i:i + batch_size], texts[i:i + batch_size]).tolist())
        return out

    def batch_loss(self, batch: ScoredBatch, cfg: JudgeConfig, model: torch.nn.Module | None = None) -> StepOutput:
        scores = self.head(batch.documents, batch.texts, model)
        dev = scores.device
        chosen, rejected = scores[batch.chosen.to(dev)], scores[batch.rejected.to(dev)]
        loss = preference_loss(chosen, rejected, batch.margin.to(dev) if cfg.use_margin else None,
                               batch.weight.to(dev) if cfg.use_weight else None)
        return StepOutput(loss, len(batch.chosen), {"acc": float((chosen > rejected).float().mean())})

    def pair_scores(self, pairs: Sequence[PreferencePair], batch_size: int = 32) -> list[tuple[float, float]]:
        """(r(chosen), r(rejected)) for every pair, each distinct input scored once."""
        index: dict[tuple[str, str], int] = {}
        for p in pairs:
            for text in (p.chosen, p.rejected):
                index.setdefault((p.prompt, text), len(index))
        inputs = list(index)
        scores = self.score([d for d, _ in inputs], [t for _, t in inputs], batch_size)
        return [(scores[index[(p.prompt, p.chosen)]], scores[index[(p.prompt, p.rejected)]]) for p in pairs]
