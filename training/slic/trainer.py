"""Train a LoRA adapter on the policy with the SLiC-HF loss.

One copy of the weights: the base is frozen and only the adapter learns, so there is no
reference model and no value model to hold or run. The saved adapter is written whole or not at
all, with `slic.json` beside it (settings, metrics, data); `load_causal_lm(base, adapter=...)`
serves it, and `merge_adapter` folds it into the base for serving without peft.
"""
from __future__ import annotations

import contextlib
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from training.artifacts import atomic_dir, fingerprint
from training.loading import load_causal_lm, load_tokenizer
from training.loop import StepOutput
from training.prompts import resolve_template
from training.slic.collator import SlicBatch, SlicCollator, SlicExample
from training.slic.config import SlicConfig
from training.slic.loss import continuation_logprobs, full_sequence_logprobs, slic_loss
from training.training_run import TrainingRun

if TYPE_CHECKING:
    from peft import PeftModel

MANIFEST = "slic.json"


def add_policy_lora(model: PreTrainedModel, cfg: SlicConfig, adapter: str | Path | None = None) -> PreTrainedModel:
    """A trainable LoRA adapter on the frozen policy: a fresh one, or the parent round's
    adapter to continue from."""
    from peft import LoraConfig, PeftModel, get_peft_model

    # the wrapper forwards every attribute it lacks to the model it wraps: callers use it as one
    if adapter is not None:
        return cast(PreTrainedModel, PeftModel.from_pretrained(model, str(adapter), is_trainable=True))
    lora = LoraConfig(task_type="CAUSAL_LM", r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                      target_modules=[t.strip() for t in cfg.lora_targets.split(",")])
    return cast(PreTrainedModel, get_peft_model(model, lora))


def sequence_logprobs(model: PreTrainedModel, batch: SlicBatch, cfg: SlicConfig) -> torch.Tensor:
    fn = continuation_logprobs if cfg.shared_prefix and not cfg.gradient_checkpointing else full_sequence_logprobs
    autocast = (torch.autocast("cpu", dtype=torch.bfloat16) if cfg.cpu_bf16 and batch.prompt_ids.device.type == "cpu"
                else contextlib.nullcontext())
    with autocast:
        return fn(model, batch.prompt_ids, batch.prompt_mask, batch.targets, batch.target_mask,
                  chunk=cfg.logprob_chunk, normalize=cfg.length_normalize).float()


class SequenceScorer(torch.nn.Module):
    """The policy's log P(y | x) for every target of a batch, as one module's forward: under
    several processes the training loop wraps this module, and DDP averages the gradients of
    what runs inside the wrapper's forward — here, every decoder call of the shared prefix."""

    def __init__(self, policy: PreTrainedModel, cfg: SlicConfig) -> None:
        super().__init__()
        self.policy, self.cfg = policy, cfg

    def forward(self, batch: SlicBatch) -> torch.Tensor:
        return sequence_logprobs(self.policy, batch.to(next(self.policy.parameters()).device), self.cfg)


def slic_step(scorer: torch.nn.Module, batch: SlicBatch, cfg: SlicConfig) -> StepOutput:
    """One batch: y+, y- and y_ref of every example in one forward pass of `scorer` (a
    `SequenceScorer`, or the training loop's wrapper of one)."""
    logps = scorer(batch).view(-1, 3)
    loss, calibration = slic_loss(logps[:, 0], logps[:, 1], logps[:, 2], cfg)
    # the loss's two terms apart: the ranking hinge, and λ·-log P(y_ref|x) that keeps the policy near its references
    return StepOutput(loss, len(logps), {"calibration": float(calibration.detach()),
                                         "regularisation": float((loss - calibration).detach()),
                                         "pair_acc": float((logps[:, 0] > logps[:, 1]).float().mean())})


def sft_step(scorer: torch.nn.Module, batch: SlicBatch, cfg: SlicConfig) -> StepOutput:
    """Supervised fine-tuning: the λ·log P(y_ref|x) term of the SLiC-HF loss alone, one target
    (the human reference, or the preferred summary) per example."""
    logps = scorer(batch)
    return StepOutput(-cfg.reg_weight * logps.mean(), len(logps), {"logp_ref": float(logps.detach().mean())})


def policy_collator(tokenizer: PreTrainedTokenizerBase, cfg: SlicConfig) -> SlicCollator:
    return SlicCollator(tokenizer, cfg.max_target_tokens,
                        leading_space=resolve_template(tokenizer, cfg.template) == "tldr")


@dataclass
class SlicResult:
    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    metrics: dict[str, Any]
    path: Path | None


def train_slic(policy: str | Path, examples: Sequence[SlicExample], cfg: SlicConfig, *, out: Path | None,
               adapter: str | Path | None = None, device: str = "auto", progress: bool = True,
               stop_after: int | None = None, extra: dict[str, Any] | None = None,
               on_step: Callable[[int, int, float], bool] | None = None) -> SlicResult:
    """Train on `examples` (prompts already in the policy's template) and save the adapter to
    `out`. Interrupted runs (or `stop_after`) keep a checkpoint beside `out`; the same call
    again resumes from it."""
    if not examples:
        raise ValueError("no SLiC-HF examples")
    tokenizer = load_tokenizer(policy)
    torch.manual_seed(cfg.seed)
    model = add_policy_lora(load_causal_lm(policy, device=device, dtype=torch.float32), cfg, adapter)
    if cfg.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()
    collate = policy_collator(tokenizer, cfg)
    data_hash = fingerprint([(e.prompt, e.positive, e.negative, e.reference) for e in examples])

    def batch(chunk: list[SlicExample]) -> SlicBatch:
        if cfg.sft:  # one continuation per example: the reference
            return collate.encode([e.prompt for e in chunk], [[e.reference] for e in chunk])
        return collate(chunk)

    def batches(epoch: int) -> list[SlicBatch]:
        order = list(range(len(examples)))
        random.Random(cfg.seed + epoch).shuffle(order)
        return [batch([examples[i] for i in order[s:s + cfg.batch_size]]) for s in range(0, len(order), cfg.batch_size)]

    run = TrainingRun.keyed("slic", out, cfg.as_dict(), str(policy), str(adapter), data_hash)
    step = sft_step if cfg.sft else slic_step
    result = run.fit(SequenceScorer(model, cfg), batches, lambda m, b: step(m, b, cfg), cfg,
                     desc="SFT" if cfg.sft else "SLiC-HF", progress=progress, stop_after=stop_after, on_step=on_step)
    tail = result.history[-max(1, len(result.history) // 4):]
    metrics: dict[str, Any] = {
        "examples": len(examples), "optimizer_steps": result.steps, "train_seconds": result.seconds,
        "final_loss": result.last_loss,
        "pair_accuracy_last_quarter": sum(h["pair_acc"] for h in tail) / len(tail) if tail and not cfg.sft else None,
        "history": result.history, "data_hash": data_hash, **(extra or {})}
    if result.logs is not None:
        metrics["logs"] = str(result.logs)
    if result.interrupted:
        metrics["interrupted"] = True
    if not run.saves(result):  # the checkpoint holds an interrupted run; one of several processes saves
        return SlicResult(model, tokenizer, metrics, None)
    path = run.save(model.save_pretrained, MANIFEST, {"policy": str(policy), "config": cfg.as_dict(),
                                                      "metrics": metrics,
                                                      "parent_adapter": str(adapter) if adapter else None})
    model.eval()
    return SlicResult(model, tokenizer, metrics, path)


def merge_adapter(policy: str | Path, adapter: str | Path, out: Path) -> Path:
    """The policy with the adapter folded in, saved as an ordinary model folder."""
    with_adapter = cast("PeftModel", load_causal_lm(policy, device="cpu", dtype=torch.float32, adapter=adapter))
    model = with_adapter.merge_and_unload()
    tokenizer = load_tokenizer(policy)
    with atomic_dir(out) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
    return out
