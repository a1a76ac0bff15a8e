"""Settings of the two judges (reward and ranking model), and LoRA for causal LM backbones."""
from __future__ import annotations

from dataclasses import dataclass, field

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
