"""Settings of the two judges (reward and ranking model), and LoRA for causal LM backbones."""
from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Self

import torch
import torch.nn.functional as F
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from training.judge_inputs import JudgeCollator, is_encoder
from training.loading import load_sequence_classifier, load_tokenizer
from training.loop import LoopConfig


@dataclass
class JudgeConfig(LoopConfig):
    """Settings shared by the reward and the ranking model (cosine schedule with warm-up, as
    Llama 2; two epochs rather than its one, found on the TL;DR comparisons)."""

    backbone: str = field(default="", metadata={"help": "hub id, folder or GGUF file; empty: the default encoder"})
    epochs: int = 2  # the second epoch takes held-out accuracy from 0.596 to 0.604 (docs/benchmarks.md)
    max_length: int = field(default=256, metadata={"help": "tokens per input; the post is cut, never the summary"})
    learning_rate: float = 1e-5  # gentle: 5e-5 trades the encoder's similarity for length (docs/benchmarks.md)
    head_learning_rate: float = field(default=0.0, metadata={
        "help": "peak learning rate of the scalar head; 0: the same as the backbone's"})
    batch_texts: int = field(default=8, metadata={"help": "inputs per forward pass"})
    use_margin: bool = field(default=False, metadata={"help": "subtract the pair's margin inside the loss"})
    use_weight: bool = field(default=False, metadata={"help": "weight each pair by its export weight"})
    freeze_layers: int = field(default=0, metadata={
        "help": "keep the embeddings and this many lowest layers fixed: less to back-propagate, less to over-fit"})
    read_post: bool = field(default=False, metadata={
        "help": "summaries attend to the post (cross-encoder); off: post and summary are embedded apart and "
                "the head weighs their agreement (two towers, the sentence encoder's own geometry)"})
    lora_r: int = field(default=0, metadata={"help": ">0: LoRA on the backbone (decoders), head trainable"})
    lora_alpha: int = 32
    test_fraction: float = field(default=0.2, metadata={"help": "documents held out when no test set is given"})

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.batch_texts < 2:
            raise ValueError("batch_texts must be at least 2")


MANIFEST = "judge.json"  # a saved judge's kind, settings, metrics and data
SIMILARITY_SCALE = 4.0  # about the slope of P(preferred) on the cosine gap, fitted on TL;DR comparisons
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
    # fully trained judges keep fp32 weights (bf16 weights would swallow small updates; GPUs
    # use `mixed_precision` instead); LoRA keeps the frozen base in the device's default dtype
    model = load_sequence_classifier(spec, num_labels=1, device=device,
                                     dtype=None if cfg.lora_r > 0 else torch.float32)
    model.config.pad_token_id = tokenizer.pad_token_id
    for name, param in model.named_parameters():
        if ".pooler." in name:  # the head reads pooled summary tokens, not the pooler's [CLS]
            param.requires_grad_(False)
    if cfg.freeze_layers > 0:
        freeze_lower(model, cfg.freeze_layers)
    if not cfg.read_post and not (Path(spec) / MANIFEST).is_file():
        start_as_similarity(model)
    if cfg.lora_r > 0:
        model = add_lora(model, cfg)
        scalar_head(model).float()  # the trainable head in fp32 over a bf16 base: small updates must not vanish
    return model, tokenizer


def start_as_similarity(model: PreTrainedModel) -> None:
    """A fresh two-tower head starts as SIMILARITY_SCALE × cos(summary, post): on the TL;DR
    comparisons that alone picks the preferred summary 58% of the time, where a random head
    starts at chance and, on a few thousand pairs, learns little beyond length."""
    head = scalar_head(model)
    with torch.no_grad():
        head.weight.fill_(SIMILARITY_SCALE)
        if head.bias is not None:
            head.bias.zero_()


def add_lora(model: PreTrainedModel, cfg: JudgeConfig) -> PreTrainedModel:
    """LoRA on every linear layer of the backbone; peft's sequence-classification task keeps the
    scalar head fully trainable."""
    from peft import LoraConfig, get_peft_model

    return get_peft_model(model, LoraConfig(task_type="SEQ_CLS", r=cfg.lora_r, lora_alpha=cfg.lora_alpha,
                                            lora_dropout=0.05, target_modules="all-linear"))


def unwrap_for_saving(model: PreTrainedModel) -> PreTrainedModel:
    """A LoRA-wrapped judge is merged into its backbone, so the artifact loads as a plain model."""
    return model.merge_and_unload() if hasattr(model, "merge_and_unload") else model


def head_names(model: torch.nn.Module) -> set[str]:
    """Names of the parameters of the model's scalar head."""
    head = scalar_head(model)
    ids = {id(p) for p in head.parameters()}
    return {name for name, p in model.named_parameters() if id(p) in ids}


def scalar_head(model: torch.nn.Module) -> torch.nn.Module:
    """The model's scalar output layer (`classifier`, `score`, …): its last one-output linear
    layer, or the peft wrapper that holds the trainable copy of it."""
    found: tuple[str, torch.nn.Module] | None = None
    for name, module in model.named_modules():
        wrapper = type(module).__name__ == "ModulesToSaveWrapper"
        if (wrapper or (isinstance(module, torch.nn.Linear) and module.out_features == 1)) and not (
                found and name.startswith(found[0] + ".")):
            found = (name, module)
    if found is None:
        raise ValueError(f"{type(model).__name__} has no scalar output layer")
    return found[1]


def chunks_by_document(documents: Sequence[str], size: int) -> list[list[int]]:
    """Input positions in chunks of `size`, those of one document next to each other so that
    they share rows (see `judge_inputs`)."""
    order = sorted(range(len(documents)), key=documents.__getitem__)
    return [order[i:i + size] for i in range(0, len(order), size)]


class ScalarJudge:
    """A backbone with a scalar head, its tokenizer and input layout (see `judge_inputs`)."""

    def __init__(self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, cfg: JudgeConfig) -> None:
        self.model, self.tokenizer = model, tokenizer
        self.encoder, self.read_post = is_encoder(model.config), cfg.read_post
        self.collate = JudgeCollator(tokenizer, cfg.max_length, encoder=self.encoder, read_post=cfg.read_post)

    @classmethod
    def load(cls, spec: str | Path, cfg: JudgeConfig | None = None, *, device: str = "auto") -> Self:
        """A trained judge, or a fresh scalar head on a backbone (LoRA when `lora_r`)."""
        cfg = cfg or JudgeConfig()
        model, tokenizer = load_judge_model(spec, cfg, device)
        return cls(model, tokenizer, cfg)

    def part_scores(self, documents: Sequence[str], segments: Sequence[Sequence[str]],
                    model: torch.nn.Module | None = None) -> torch.Tensor:
        """The head's output on each part of each (document, segment): (segments, parts).

        `model` is the training loop's wrapped copy when it has one (several GPUs): the forward
        pass goes through it so that gradients are synchronised."""
        model = model or self.model
        batch = self.collate(documents, segments)
        hidden = model(**batch.model_inputs(next(model.parameters()).device),
                       output_hidden_states=True).hidden_states[-1]

        def pool(row: int, start: int, end: int) -> torch.Tensor:
            return hidden[row, start:end].mean(0) if self.encoder else hidden[row, end - 1]

        pooled = torch.stack([torch.stack([pool(*span) for span in spans]) for spans in batch.parts])
        if not self.read_post:  # two towers: the head weighs the agreement of summary and post
            post = torch.stack([pool(*span) for span in batch.posts])[:, None, :]
            pooled = F.normalize(pooled, dim=-1) * F.normalize(post, dim=-1)
        head = scalar_head(model)
        # the backbone's output is fp32 under mixed precision (accelerate) and bf16 without it
        return head(pooled.to(next(head.parameters()).dtype))[..., 0].float()
