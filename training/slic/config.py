"""Settings of a SLiC-HF round: the loss, the LoRA adapter, and the inputs."""
from __future__ import annotations

from dataclasses import dataclass, field

from training.generation import SamplingConfig
from training.loop import LoopConfig

LLAMA_LORA_TARGETS = "q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj"
Y_REF = ("reference", "best_decode")


@dataclass
class SlicConfig(LoopConfig):
    delta: float = field(default=1.0, metadata={"help": "margin δ of the calibration hinge (paper: 1.0)"})
    reg_weight: float = field(default=0.5, metadata={"help": "λ on -log P(y_ref|x); 0 disables"})
    length_normalize: bool = field(default=False, metadata={"help": "mean instead of summed token log-probs"})
    pairs_per_document: int = field(default=0, metadata={
        "help": "train on at most this many of a document's ranked pairs, the judge's most confident first (0: all)"})
    y_ref: str = field(default="reference", metadata={
        "help": "reference (human summary when there is one) | best_decode"})
    learning_rate: float = field(default=1e-4, metadata={
        "help": "the paper's 1e-5 is for full fine-tuning; LoRA adapters need a larger step"})
    batch_size: int = field(default=4, metadata={"help": "examples (each y+, y-, y_ref) per forward pass"})
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    lora_targets: str = field(default=LLAMA_LORA_TARGETS, metadata={"help": "comma-separated module names"})
    max_prompt_tokens: int = field(default=512, metadata={"help": "the post is cut to this many tokens"})
    max_target_tokens: int = field(default=64, metadata={"help": "summaries are cut to this many tokens"})
    template: str = field(default="auto", metadata={"help": "auto | chat | tldr; the same as sampling used"})
    shared_prefix: bool = field(default=True, metadata={
        "help": "encode each prompt once and let y+, y-, y_ref attend to its cache"})
    logprob_chunk: int = field(default=256, metadata={"help": "target tokens per chunk of the vocabulary projection"})
    gradient_checkpointing: bool = field(default=False, metadata={
        "help": "recompute activations (implies no shared prefix)"})
    cpu_bf16: bool = field(default=False, metadata={"help": "bf16 autocast on the CPU"})
    sft: bool = field(default=False, metadata={
        "help": "supervised fine-tuning: the λ·log P(y_ref|x) term alone, on references (round 0)"})

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.delta <= 0 or self.reg_weight < 0:
            raise ValueError("need delta > 0 and reg_weight >= 0")
        if self.y_ref not in Y_REF:
            raise ValueError(f"y_ref must be one of {', '.join(Y_REF)}")
        if self.pairs_per_document < 0:
            raise ValueError("pairs_per_document must be 0 (all) or more")
        if self.batch_size < 1 or self.lora_r < 1 or self.max_target_tokens < 1 or self.logprob_chunk < 1:
            raise ValueError("batch_size, lora_r, max_target_tokens and logprob_chunk must be at least 1")


@dataclass(frozen=True)
class RoundSampling:
    """How a round samples from the policy: m candidates per document at the SLiC-HF paper's
    temperature and top-k, and fixed seeds so a round can be rerun; evaluation draws one summary
    per held-out document from each policy with its own seed."""

    per_doc: int = field(default=8, metadata={"help": "m: samples per document (SLiC-HF: 8)"})
    temperature: float = 0.7
    top_k: int = 40
    max_new_tokens: int = field(default=64, metadata={"help": "TL;DRs are ~40 tokens"})
    seed: int | None = 0
    eval_seed: int = 1234

    def sampling(self) -> SamplingConfig:
        """For sample-rank: m samples per document."""
        return SamplingConfig(per_doc=self.per_doc, temperature=self.temperature, top_k=self.top_k,
                              max_new_tokens=self.max_new_tokens, seed=self.seed)

    def evaluation(self) -> SamplingConfig:
        """For evaluation: one sample per document and policy (`run_evaluation` takes one)."""
        return SamplingConfig(per_doc=1, temperature=self.temperature, top_k=self.top_k,
                              max_new_tokens=self.max_new_tokens, seed=self.eval_seed)
