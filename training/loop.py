"""The training loop every trainer shares (reward model, ranking model, SLiC-HF), on Accelerate.

Plain on purpose: the caller supplies the batches of an epoch (a deterministic function of the
seed and epoch, so a resumed run sees the same batches) and a function that turns a batch into
a loss; this loop does the optimiser, the schedule with warm-up, gradient accumulation,
checkpoints every `checkpoint_every` steps and resuming from the last one, and the progress bar.
The same code runs on a CPU, one GPU, or several under `accelerate launch`: each process takes
every n-th batch, the same number each, and the main process alone evaluates, saves and
registers what they trained together (`is_main_process`).
"""
from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from itertools import cycle, islice
from pathlib import Path
from typing import Any, TypeVar

import torch
from accelerate import Accelerator, PartialState
from tqdm.auto import tqdm
from transformers import get_scheduler

from training.errors import CheckpointMismatch

B = TypeVar("B")


@dataclass
class LoopConfig:
    """Optimisation settings; each trainer's config extends these."""

    learning_rate: float = 5e-5
    epochs: int = 1
    schedule: str = field(default="cosine", metadata={"help": "cosine | constant | linear (all with warm-up)"})
    warmup_ratio: float = 0.1
    weight_decay: float = 0.0
    grad_accum: int = 1
    max_grad_norm: float = field(default=1.0, metadata={"help": "clip gradients to this norm; 0 disables"})
    checkpoint_every: int = field(default=100, metadata={"help": "optimizer steps between checkpoints"})
    seed: int = 0
    mixed_precision: str = field(default="no", metadata={"help": "no | bf16 | fp16 (GPUs)"})

    def __post_init__(self) -> None:
        if self.schedule not in ("cosine", "constant", "linear"):
            raise ValueError("schedule must be cosine, constant or linear")
        if self.epochs < 1 or self.grad_accum < 1:
            raise ValueError("epochs and grad_accum must be at least 1")
        if not 0 <= self.warmup_ratio < 1:
            raise ValueError("warmup_ratio must be in [0, 1)")
        if self.learning_rate <= 0:
            raise ValueError("learning_rate must be positive")

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class StepOutput:
    loss: torch.Tensor
    examples: int  # pairs (or SLiC examples) the batch covered
    stats: dict[str, float] = field(default_factory=dict)  # shown on the progress bar, kept in the history


@dataclass
class FitResult:
    steps: int
    seconds: float
    examples: int
    last_loss: float
    history: list[dict[str, float]]
    interrupted: bool = False


def fit(model: torch.nn.Module, epoch_batches: Callable[[int], Sequence[B]],
        step: Callable[[torch.nn.Module, B], StepOutput], cfg: LoopConfig, *,
        checkpoint_dir: Path | None = None, desc: str = "train", progress: bool = True,
        stop_after: int | None = None, lr_of: Callable[[str], float] | None = None,
        on_step: Callable[[int, int, float], bool] | None = None) -> FitResult:
    """Train `model` in place. `stop_after` ends the run after that many optimizer steps (as an
    interruption would), keeping the checkpoint taken there. `on_step(step, total, loss)` hears
    of every optimizer step (live progress) and ends the run as an interruption when it answers
    True (a cancelled round). `lr_of` gives a parameter (by
    name) its own peak learning rate; the schedule scales every rate alike."""
    accelerator = Accelerator(gradient_accumulation_steps=cfg.grad_accum, mixed_precision=cfg.mixed_precision)
    torch.manual_seed(cfg.seed)
    processes, rank = accelerator.num_processes, accelerator.process_index
    plan = [even_share(list(epoch_batches(e)), processes)[rank::processes] for e in range(cfg.epochs)]
    total_batches = sum(len(p) for p in plan)
    total_steps = max(1, math.ceil(total_batches / cfg.grad_accum))
    groups: dict[float, list[torch.nn.Parameter]] = {}
    for name, p in model.named_parameters():
        if p.requires_grad:
            groups.setdefault(lr_of(name) if lr_of else cfg.learning_rate, []).append(p)
    params = [p for ps in groups.values() for p in ps]
    optimizer = torch.optim.AdamW([{"params": ps, "lr": lr} for lr, ps in groups.items()], lr=cfg.learning_rate,
                                  weight_decay=cfg.weight_decay)
    # Accelerate ticks a prepared scheduler once per process at each optimizer step: in ticks, the
    # schedule is that many times longer (then n processes follow the curve of one accumulating n)
    scheduler = get_scheduler("constant_with_warmup" if cfg.schedule == "constant" else cfg.schedule, optimizer,
                              num_warmup_steps=int(cfg.warmup_ratio * total_steps) * processes,
                              num_training_steps=total_steps * processes)
    model, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)
    done = _resume(accelerator, checkpoint_dir)
    model.train()
    history: list[dict[str, float]] = []
    seen, last_loss, t0 = 0, float("nan"), time.perf_counter()
    bar = tqdm(total=total_batches, initial=min(total_batches, done * cfg.grad_accum), desc=desc,
               disable=not progress or not accelerator.is_main_process)
    index = 0
    for batches in plan:
        for batch in batches:
            index += 1
            if index <= done * cfg.grad_accum:
                continue  # trained before the interruption
            with accelerator.accumulate(model):
                out = step(model, batch)
                accelerator.backward(out.loss)
                if accelerator.sync_gradients and cfg.max_grad_norm > 0:
                    accelerator.clip_grad_norm_(params, cfg.max_grad_norm)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad()
            seen += out.examples
            last_loss = float(out.loss.detach())
            bar.update(1)
            bar.set_postfix(loss=f"{last_loss:.3f}", **{k: f"{v:.3f}" for k, v in out.stats.items()})
            if accelerator.sync_gradients:
                optimizer_steps = index // cfg.grad_accum
                history.append({"step": optimizer_steps, "loss": last_loss, **out.stats})
                if checkpoint_dir is not None and optimizer_steps % cfg.checkpoint_every == 0:
                    _checkpoint(accelerator, checkpoint_dir, optimizer_steps)
                stop = on_step is not None and on_step(optimizer_steps, total_steps, last_loss)
                if stop or (stop_after is not None and optimizer_steps >= stop_after):
                    bar.close()
                    return FitResult(optimizer_steps, time.perf_counter() - t0, seen, last_loss, history, True)
    bar.close()
    model.eval()
    return FitResult(total_steps, time.perf_counter() - t0, seen, last_loss, history)


def even_share(batches: list[B], processes: int) -> list[B]:
    """`batches` made a multiple of `processes` long with the epoch's first batches again (as
    torch's DistributedSampler pads): a process with one batch fewer than the others would wait
    forever for their gradients."""
    return [*batches, *islice(cycle(batches), -len(batches) % processes)]


def is_main_process() -> bool:
    """False in the extra processes of `accelerate launch`, after `fit`: they trained the same
    weights beside the main process, which alone evaluates, saves and registers them."""
    return PartialState().is_main_process


def _checkpoint(accelerator: Accelerator, directory: Path, steps: int) -> None:
    accelerator.wait_for_everyone()
    accelerator.save_state(str(directory / "state"))
    if accelerator.is_main_process:
        (directory / "progress.json").write_text(json.dumps({"optimizer_steps": steps,
                                                             "processes": accelerator.num_processes}))


def _resume(accelerator: Accelerator, directory: Path | None) -> int:
    """Optimizer steps already taken by an interrupted run with the same settings (0: none)."""
    if directory is None or not (directory / "progress.json").exists():
        return 0
    progress = json.loads((directory / "progress.json").read_text())
    # each process's share of the batches, and the schedule's ticks, depend on how many there are
    written_by = progress.get("processes", 1)
    if written_by != accelerator.num_processes:
        raise CheckpointMismatch(f"{directory} was written by {written_by} process(es), not "
                                 f"{accelerator.num_processes}: resume with as many, or remove it to start over")
    accelerator.load_state(str(directory / "state"))
    return int(progress["optimizer_steps"])
