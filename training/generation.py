"""Sample K candidate summaries per document from a causal LM.

Documents go through in batches with left padding. Each document's prompt is encoded once:
the batch is prefilled, its KV cache repeated K times, and the K samples decode from it, so a
500-token post costs one prefill instead of K.
"""
from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field

import torch
from transformers import PreTrainedTokenizerBase

from training.loading import CausalLM, cache_kwarg, output_cache
from training.prompts import DocPrompt, build_prompt, clean_summary, resolve_template


@dataclass(frozen=True)
class SamplingConfig:
    per_doc: int = field(default=4, metadata={"help": "samples per document (SLiC-HF uses 8)"})
    temperature: float = field(default=0.7, metadata={"help": "SLiC-HF paper value"})
    top_k: int = field(default=40, metadata={"help": "SLiC-HF paper value; 0 disables"})
    top_p: float = field(default=1.0, metadata={"help": "nucleus sampling; 1.0 disables"})
    max_new_tokens: int = field(default=64, metadata={"help": "TL;DRs are ~40 tokens"})
    template: str = field(default="auto", metadata={"help": "auto | chat | tldr"})
    max_post_tokens: int = field(default=512, metadata={"help": "longer posts are cut"})
    batch_docs: int = field(default=4, metadata={"help": "documents per batch (x per_doc sequences)"})
    seed: int | None = None

    def __post_init__(self) -> None:
        if self.per_doc < 1 or self.batch_docs < 1 or self.max_new_tokens < 1:
            raise ValueError("per_doc, batch_docs and max_new_tokens must be at least 1")
        if self.temperature <= 0:
            raise ValueError("temperature must be > 0 (sampling); use a small value for near-greedy")
        if not 0 < self.top_p <= 1:
            raise ValueError("top_p must be in (0, 1]")

    def decoding(self, template: str) -> dict[str, object]:
        """What is stored with each candidate, so a sample can be reproduced or compared."""
        keys = ("temperature", "top_k", "top_p", "max_new_tokens", "max_post_tokens")
        return {**{k: v for k, v in asdict(self).items() if k in keys}, "template": template}


@dataclass(frozen=True)
class Sample:
    text: str
    token_count: int


def _left_padded(tokenizer: PreTrainedTokenizerBase, prompts: Sequence[str],
                 device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    tokenizer.padding_side = "left"
    enc = tokenizer(list(prompts), return_tensors="pt", padding=True, add_special_tokens=False)
    return enc["input_ids"].to(device), enc["attention_mask"].to(device)


@torch.no_grad()
def sample_prompts(model: CausalLM, tokenizer: PreTrainedTokenizerBase, prompts: Sequence[str],
                   cfg: SamplingConfig, *, share_prompt: bool = True,
                   generator_seed: int | None = None) -> list[list[tuple[list[int], int]]]:
    """Token ids of `cfg.per_doc` continuations of each prompt (ids up to, not including, EOS)."""
    device = next(model.parameters()).device
    ids, mask = _left_padded(tokenizer, prompts, device)
    k = cfg.per_doc
    gen_kwargs: dict[str, object] = dict(
        do_sample=True, temperature=cfg.temperature, top_k=cfg.top_k or None, top_p=cfg.top_p,
        max_new_tokens=cfg.max_new_tokens, pad_token_id=tokenizer.pad_token_id)
    if generator_seed is not None:
        torch.manual_seed(generator_seed)
    if share_prompt and k > 1 and ids.shape[1] > 1:
        # Prefill every prompt but its last token once, then decode K samples off copies of that
        # cache; generate() sees a cache covering all but the last prompt token and goes on.
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        out = model(input_ids=ids[:, :-1], attention_mask=mask[:, :-1],
                    position_ids=positions[:, :-1], use_cache=True)
        cache = output_cache(out)
        cache.batch_repeat_interleave(k)
        gen = model.generate(input_ids=ids.repeat_interleave(k, 0), attention_mask=mask.repeat_interleave(k, 0),
                             **{cache_kwarg(model): cache}, **gen_kwargs)
    else:
        gen = model.generate(input_ids=ids, attention_mask=mask, num_return_sequences=k, **gen_kwargs)
    new = gen[:, ids.shape[1]:].tolist()
    eos = set(_as_list(model.generation_config.eos_token_id) + _as_list(tokenizer.eos_token_id))
    results: list[list[tuple[list[int], int]]] = []
    for i in range(len(prompts)):
        row = []
        for seq in new[i * k:(i + 1) * k]:
            stop = next((j for j, t in enumerate(seq) if t in eos), len(seq))
            row.append((seq[:stop], stop))
        results.append(row)
    return results


def _as_list(value: int | list[int] | None) -> list[int]:
    if value is None:
        return []
    return list(value) if isinstance(value, (list, tuple)) else [value]


def generate(model: CausalLM, tokenizer: PreTrainedTokenizerBase, docs: Sequence[DocPrompt],
             cfg: SamplingConfig) -> Iterator[tuple[DocPrompt, list[Sample]]]:
    """Yield each document with its distinct, non-empty samples, one batch at a time."""
    template = resolve_template(tokenizer, cfg.template)
    for start in range(0, len(docs), cfg.batch_docs):
        batch = docs[start:start + cfg.batch_docs]
        prompts = [build_prompt(tokenizer, d, template, cfg.max_post_tokens) for d in batch]
        seed = None if cfg.seed is None else cfg.seed + start
        outputs = sample_prompts(model, tokenizer, prompts, cfg, generator_seed=seed)
        for doc, rows in zip(batch, outputs, strict=True):
            seen: set[str] = set()
            samples = []
            for token_ids, n_tokens in rows:
                decoded = tokenizer.decode(token_ids, skip_special_tokens=True)
                assert isinstance(decoded, str)  # one sequence: one string (`decode` is typed for batches too)
                text = clean_summary(decoded, template)
                if text and text not in seen:
                    seen.add(text)
                    samples.append(Sample(text, n_tokens))
            yield doc, samples
