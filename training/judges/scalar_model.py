"""The scalar judge: a pretrained backbone with a one-output head, which the reward model and
the ranking model both are; loading, freezing, LoRA, and the head's output on packed inputs."""
from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar, Self, cast

import torch
import torch.nn.functional as F
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from annotate.export import repeats_layout
from training.judges.candidate_ranking import Ranking
from training.judges.collator import JudgeCollator, is_encoder
from training.judges.config import JudgeConfig
from training.judges.pairs import PreferencePair
from training.loading import load_sequence_classifier, load_tokenizer
from training.loop import StepOutput

MANIFEST = "judge.json"  # a saved judge's kind, settings, metrics and data
SIMILARITY_SCALE = 4.0  # about the slope of P(preferred) on the cosine gap, fitted on TL;DR comparisons
_LAYER = re.compile(r"\.(?:layer|layers|h|block)\.(\d+)\.")


def freeze_lower(model: PreTrainedModel, layers: int) -> None:
    """Stop gradients to the embeddings and the `layers` lowest transformer layers."""
    for name, param in model.named_parameters():
        match = _LAYER.search(name)
        if "embed" in name or (match and int(match[1]) < layers):
            param.requires_grad_(False)


def load_judge_model(spec: str | Path, cfg: JudgeConfig,
                     device: str) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
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
    if not isinstance(head, torch.nn.Linear):  # a fresh head, before any peft wrapper
        raise TypeError(f"the scalar head is a {type(head).__name__}, not a linear layer")
    with torch.no_grad():
        head.weight.fill_(SIMILARITY_SCALE)
        if head.bias is not None:
            head.bias.zero_()


def add_lora(model: PreTrainedModel, cfg: JudgeConfig) -> PreTrainedModel:
    """LoRA on every linear layer of the backbone; peft's sequence-classification task keeps the
    scalar head fully trainable."""
    from peft import LoraConfig, get_peft_model

    lora = LoraConfig(task_type="SEQ_CLS", r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=0.05,
                      target_modules="all-linear")
    # the wrapper forwards every attribute it lacks to the model it wraps: callers use it as one
    return cast(PreTrainedModel, get_peft_model(model, lora))


def unwrap_for_saving(model: PreTrainedModel) -> PreTrainedModel:
    """A LoRA-wrapped judge is merged into its backbone, so the artifact loads as a plain model."""
    merge_and_unload = getattr(model, "merge_and_unload", None)  # a peft wrapper's
    return merge_and_unload() if merge_and_unload is not None else model


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


class ScalarJudge(ABC):
    """A backbone with a scalar head, its tokenizer and input layout (see `collator`).

    The one interface of both judges: `prefer` gives P(a ≻ b) for (document, a, b), `rank`
    orders one document's candidates into the pairs a SLiC-HF round learns from; training
    goes through `training_batches` and `batch_loss`. Callers never ask which judge it is."""

    kind: ClassVar[str]

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

    @abstractmethod
    def prefer(self, comparisons: Sequence[tuple[str, str, str]], batch_size: int = 32) -> list[float]:
        """P(a ≻ b) for each (document, a, b)."""

    def rank(self, prompt: str, texts: Sequence[str]) -> Ranking:
        """One document's candidates ranked; a candidate that restates the prompt's layout ranks
        below every one that does not, whatever the judge says."""
        return self.rank_flagged(prompt, list(texts), [repeats_layout(t) for t in texts])

    @abstractmethod
    def rank_flagged(self, prompt: str, texts: list[str], demoted: list[bool]) -> Ranking:
        """The ranking with `demoted` candidates after all others."""

    @staticmethod
    @abstractmethod
    def training_batches(pairs: Sequence[PreferencePair], batch_texts: int, seed: int) -> list[Any]:
        """An epoch's batches, whole documents each, about `batch_texts` inputs per batch."""

    @abstractmethod
    def batch_loss(self, batch: Any, cfg: JudgeConfig, model: torch.nn.Module | None = None) -> StepOutput:
        """The loss of one batch; `model` is the training loop's wrapped copy when it has one."""
