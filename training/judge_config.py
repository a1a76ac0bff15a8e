"""Settings of the two judges (reward and ranking model), and LoRA for causal LM backbones."""
from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Self

import torch

from transformers import PreTrainedModel, PreTrainedTokenizerBase

from training.judge_inputs import JudgeCollator, is_encoder
from training.loading import load_sequence_classifier, load_tokenizer
from training.loop import LoopConfig


@dataclass
class JudgeConfig(LoopConfig):
    """Settings shared by the reward and the ranking model (Llama 2 habits as defaults: one
    epoch, cosine schedule with warm-up)."""

    backbone: str = field(default="", metadata={"help": "hub id, folder or GGUF file; empty: the default encoder"})
    max_length: int = field(default=256, metadata={"help": "tokens per input; the post is cut, never the summary"})
    learning_rate: float = 5e-5
    batch_texts: int = field(default=16, metadata={"help": "inputs per forward pass"})
    use_margin: bool = field(default=False, metadata={"help": "subtract the pair's margin inside the loss"})
    use_weight: bool = field(default=False, metadata={"help": "weight each pair by its export weight"})
    freeze_layers: int = field(default=0, metadata={
        "help": "keep the embeddings and this many lowest layers fixed: less to back-propagate, less to over-fit"})
    lora_r: int = field(default=0, metadata={"help": ">0: LoRA on the backbone (decoders), head trainable"})
    lora_alpha: int = 32
    test_fraction: float = field(default=0.2, metadata={"help": "documents held out when no test set is given"})

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.batch_texts < 2:
            raise ValueError("batch_texts must be at least 2")


_LAYER = re.compile(r"\.(?:layer|layers|h|block)\.(\d+)\.")


def freeze_lower(model: PreTrainedModel, layers: int) -> None:
    """Stop gradients to the embeddings and the `layers` lowest transformer layers."""
    for name, param in model.named_parameters():
        match = _LAYER.search(name)
        if "embed" in name or (match and int(match[1]) < layers):
            param.requires_grad_(False)


def load_judge_model(spec: str | Path, cfg: JudgeConfig, device: str) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """A backbone with a scalar head, set up for training or scoring by `cfg`."""
    tokenizer = load_tokenizer(spec, padding_side="right")
    model = load_sequence_classifier(spec, num_labels=1, device=device)
    model.config.pad_token_id = tokenizer.pad_token_id
    if cfg.freeze_layers > 0:
        freeze_lower(model, cfg.freeze_layers)
    if cfg.lora_r > 0:
        model = add_lora(model, cfg)
    return model, tokenizer


def add_lora(model: PreTrainedModel, cfg: JudgeConfig) -> PreTrainedModel:
    """LoRA on every linear layer of the backbone; peft's sequence-classification task keeps the
    scalar head fully trainable."""
    from peft import LoraConfig, get_peft_model

    return get_peft_model(model, LoraConfig(task_type="SEQ_CLS", r=cfg.lora_r, lora_alpha=cfg.lora_alpha,
                                            lora_dropout=0.05, target_modules="all-linear"))


def unwrap_for_saving(model: PreTrainedModel) -> PreTrainedModel:
    """A LoRA-wrapped judge is merged into its backbone, so the artifact loads as a plain model."""
    return model.merge_and_unload() if hasattr(model, "merge_and_unload") else model


class ScalarJudge:
    """A backbone with a scalar head, its tokenizer and input layout (summary kept whole)."""

    def __init__(self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, max_length: int) -> None:
        self.model, self.tokenizer = model, tokenizer
        self.collate = JudgeCollator(tokenizer, max_length, encoder=is_encoder(model.config))

    @classmethod
    def load(cls, spec: str | Path, cfg: JudgeConfig | None = None, *, device: str = "auto") -> Self:
        """A trained judge, or a fresh scalar head on a backbone (LoRA when `lora_r`)."""
        cfg = cfg or JudgeConfig()
        model, tokenizer = load_judge_model(spec, cfg, device)
        return cls(model, tokenizer, cfg.max_length)

    def head(self, documents: Sequence[str], texts: Sequence[str], model: torch.nn.Module | None = None) -> torch.Tensor:
        """The scalar output for each (document, text) input; `model` is the training loop's
        wrapped copy when it has one (several GPUs), so gradients are synchronised."""
        model = model or self.model
        device = next(model.parameters()).device
        batch = {k: v.to(device) for k, v in self.collate(documents, texts).items()}
        return model(**batch).logits[:, 0].float()
