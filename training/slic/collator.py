"""SLiC-HF examples to tensors: one left-padded prompt per example, and its three
continuations (y+, y-, y_ref, in that order) right-padded, each ending with the end-of-turn
token so the policy also learns where a summary stops.

    >>> batch = SlicCollator(tokenizer)([SlicExample(prompt, "good tl;dr", "bad tl;dr", "human tl;dr")])
    >>> batch.targets.shape[0] == 3 * batch.prompt_ids.shape[0]
    True
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from transformers import PreTrainedTokenizerBase


@dataclass(frozen=True)
class SlicExample:
    prompt: str  # the policy's full prompt text (template applied)
    positive: str
    negative: str
    reference: str


@dataclass(frozen=True)
class SlicBatch:
    prompt_ids: torch.Tensor  # B x P, left-padded
    prompt_mask: torch.Tensor
    targets: torch.Tensor  # 3B x L, rows (y+, y-, y_ref) per example, right-padded
    target_mask: torch.Tensor

    def to(self, device: torch.device) -> SlicBatch:
        return SlicBatch(*(t.to(device) for t in (self.prompt_ids, self.prompt_mask, self.targets, self.target_mask)))

    @property
    def tokens(self) -> int:
        return int(self.prompt_mask.sum() + self.target_mask.sum())


@dataclass
class SlicCollator:
    tokenizer: PreTrainedTokenizerBase
    max_target_tokens: int = 64
    leading_space: bool = False  # the TL;DR layout continues "TL;DR:" with a space

    def __call__(self, examples: Sequence[SlicExample]) -> SlicBatch:
        return self.encode([e.prompt for e in examples], [[e.positive, e.negative, e.reference] for e in examples])

    def encode(self, prompts: Sequence[str], continuations: Sequence[Sequence[str]]) -> SlicBatch:
        """Prompts with the same number of continuations each (three for training, one for
        scoring a reference)."""
        tok = self.tokenizer
        prompt_ids = tok(list(prompts), add_special_tokens=False)["input_ids"]
        texts = [t for group in continuations for t in group]
        prefix = " " if self.leading_space else ""
        ends = [tok.eos_token_id] if tok.eos_token_id is not None else []
        targets = [ids[: self.max_target_tokens - len(ends)] + ends
                   for ids in tok([prefix + t.strip() for t in texts], add_special_tokens=False)["input_ids"]]
        return SlicBatch(*_pad(prompt_ids, tok.pad_token_id, left=True), *_pad(targets, tok.pad_token_id, left=False))


def _pad(rows: list[list[int]], pad: int, *, left: bool) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        span = slice(width - len(r), width) if left else slice(0, len(r))
        ids[i, span] = torch.tensor(r, dtype=torch.long)
        mask[i, span] = 1
    return ids, mask
