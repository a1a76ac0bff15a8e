"""The SLiC-HF loss and the sequence log-probabilities it needs.

    L = max(0, δ - log Pθ(y+|x) + log Pθ(y-|x)) - λ log Pθ(y_ref|x)

Log-probs are summed over the summary's tokens; the prompt is never scored. Two things make it
cheap, and both keep the numbers identical to the plain computation (tests check this):

- Shared prefix. y+, y- and y_ref continue the same prompt, which is ten times longer than a
  summary. The prompt is encoded once per example; its key/value cache is repeated for the three
  continuations, which attend to it, with gradients flowing back through the cache.
- Target-only log-probs. Only summary positions are projected onto the 49k-token vocabulary,
  in chunks under activation checkpointing, so no (positions x vocabulary) log-softmax is ever
  held whole: a chunk's logits live only while its log-sum-exp is taken.
"""
from __future__ import annotations

import torch
from torch.utils.checkpoint import checkpoint
from transformers import PreTrainedModel

from training.loading import cache_kwarg, output_cache
from training.slic.config import SlicConfig


def slic_loss(logp_pos: torch.Tensor, logp_neg: torch.Tensor, logp_ref: torch.Tensor,
              cfg: SlicConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean loss, mean calibration part) over the batch."""
    calibration = torch.relu(cfg.delta - logp_pos + logp_neg)
    return (calibration - cfg.reg_weight * logp_ref).mean(), calibration.mean()


def _chunk_logprobs(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    logits = (hidden @ weight.T).float()
    return logits.gather(1, targets[:, None])[:, 0] - torch.logsumexp(logits, dim=1)


def target_logprobs(hidden: torch.Tensor, head: torch.nn.Module, targets: torch.Tensor, chunk: int) -> torch.Tensor:
    """log softmax(head(hidden))[target] per row, `chunk` rows at a time."""
    weight = head.weight
    if not isinstance(weight, torch.Tensor):
        raise ValueError("output heads without a weight matrix are not supported")
    if getattr(head, "bias", None) is not None:
        raise ValueError("output heads with a bias are not supported")
    parts = []
    for start in range(0, len(targets), chunk):
        h, t = hidden[start:start + chunk], targets[start:start + chunk]
        if torch.is_grad_enabled() and (h.requires_grad or weight.requires_grad):
            parts.append(checkpoint(_chunk_logprobs, h, weight, t, use_reentrant=False))
        else:
            parts.append(_chunk_logprobs(h, weight, t))
    return torch.cat(parts) if parts else hidden.new_zeros(0)


def _parts(model: PreTrainedModel) -> tuple[torch.nn.Module, torch.nn.Module]:
    """The decoder stack (hidden states) and the vocabulary head, LoRA layers included."""
    get_base_model = getattr(model, "get_base_model", None)  # a peft wrapper's
    base = get_base_model() if get_base_model is not None else model
    return base.get_decoder(), base.get_output_embeddings()


def _per_sequence(token_logps: torch.Tensor, rows: torch.Tensor, n: int, counts: torch.Tensor,
                  normalize: bool) -> torch.Tensor:
    total = torch.zeros(n, dtype=token_logps.dtype, device=token_logps.device).index_add(0, rows, token_logps)
    return total / counts.clamp_min(1) if normalize else total


def continuation_logprobs(model: PreTrainedModel, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor,
                          targets: torch.Tensor, target_mask: torch.Tensor, *, chunk: int = 256,
                          normalize: bool = False) -> torch.Tensor:
    """log P(target | prompt) for every target row; row r continues prompt r // k, where
    k = targets rows / prompt rows. Prompts are left-padded, targets right-padded."""
    decoder, head = _parts(model)
    k = targets.shape[0] // prompt_ids.shape[0]
    prompt_pos = (prompt_mask.cumsum(1) - 1).clamp_min(0)
    out = decoder(input_ids=prompt_ids, attention_mask=prompt_mask, position_ids=prompt_pos, use_cache=True)
    cache = output_cache(out)
    cache.batch_repeat_interleave(k)
    lengths = prompt_mask.sum(1).repeat_interleave(k)
    positions = lengths[:, None] + torch.arange(targets.shape[1], device=targets.device)[None]
    mask = torch.cat([prompt_mask.repeat_interleave(k, dim=0), target_mask], dim=1)
    cont = decoder(input_ids=targets, attention_mask=mask, position_ids=positions, **{cache_kwarg(decoder): cache},
                   use_cache=False).last_hidden_state
    # the first target token is predicted from the prompt's last position, the others from the one before
    last = out.last_hidden_state[:, -1].repeat_interleave(k, dim=0)
    predictors = torch.cat([last[:, None], cont[:, :-1]], dim=1)
    keep = target_mask.bool()
    rows = torch.arange(targets.shape[0], device=targets.device)[:, None].expand_as(targets)[keep]
    token_logps = target_logprobs(predictors[keep], head, targets[keep], chunk)
    return _per_sequence(token_logps, rows, targets.shape[0], keep.sum(1), normalize)


def full_sequence_logprobs(model: PreTrainedModel, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor,
                           targets: torch.Tensor, target_mask: torch.Tensor, *, chunk: int = 256,
                           normalize: bool = False) -> torch.Tensor:
    """The same, with each prompt repeated in front of each of its targets: the way reference
    implementations compute it, used with gradient checkpointing (which cannot keep a cache)."""
    decoder, head = _parts(model)
    k = targets.shape[0] // prompt_ids.shape[0]
    ids = torch.cat([prompt_ids.repeat_interleave(k, dim=0), targets], dim=1)
    mask = torch.cat([prompt_mask.repeat_interleave(k, dim=0), target_mask], dim=1)
    hidden = decoder(input_ids=ids, attention_mask=mask, position_ids=(mask.cumsum(1) - 1).clamp_min(0),
                     use_cache=False).last_hidden_state
    p = prompt_ids.shape[1]
    predictors = hidden[:, p - 1:-1]
    keep = target_mask.bool()
    rows = torch.arange(targets.shape[0], device=targets.device)[:, None].expand_as(targets)[keep]
    token_logps = target_logprobs(predictors[keep], head, targets[keep], chunk)
    return _per_sequence(token_logps, rows, targets.shape[0], keep.sum(1), normalize)
