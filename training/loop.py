"""The training loop every trainer shares (reward model, ranking model, SLiC-HF), on Accelerate.

Plain on purpose: the caller supplies the batches of an epoch (a deterministic function of the
seed and epoch, so a resumed run sees the same batches) and a function that turns a batch into
a loss; this loop does the optimiser, the schedule with warm-up, gradient accumulation,
checkpoints every `checkpoint_every` steps and resuming from the last one, the progress bar, and
the curves (`report_to`: loss, learning rate and the batch's own figures at every optimizer step,
the held-out evaluation at the end) through Accelerate's trackers, as TRL's trainers log them.
The same code runs on a CPU, one GPU, or several under `accelerate launch`: each process takes
every n-th batch, the same number each, and the main process alone evaluates, saves and
registers what they trained together (`is_main_process`).
"""
from __future__ import annotations

import importlib.util
import json
import math
import shutil
import sys
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

REPORT_TO = ("none", "tensorboard")


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
    report_to: str = field(default="none", metadata={
        "help": "none | tensorboard: log the training curves through Accelerate's trackers"})

    def __post_init__(self) -> None:
        if self.schedule not in ("cosine", "constant", "linear"):
            raise ValueError("schedule must be cosine, constant or linear")
        if self.epochs < 1 or self.grad_accum < 1:
            raise ValueError("epochs and grad_accum must be at least 1")
        if not 0 <= self.warmup_ratio < 1:
            raise ValueError("warmup_ratio must be in [0, 1)")
        if self.learning_rate <= 0:
            raise ValueError("learning_rate must be positive")
        if self.report_to not in REPORT_TO:
            raise ValueError(f"report_to must be one of {', '.join(REPORT_TO)}")
        # Accelerate drops a tracker whose package is missing without a word: say so before any work
        if self.report_to == "tensorboard" and importlib.util.find_spec("tensorboard") is None:
            raise ValueError("--report-to tensorboard needs the tensorboard package: pip install -e '.[tensorboard]'")

    def as_dict(self) -> dict[str, Any]:
        """The settings that decide what is trained, which a run's key, its manifest and its
        registered version hold. Where the curves go is not one of them: turning logging on
        resumes the same run, and a saved config loads where tensorboard is not installed."""
        return {k: v for k, v in asdict(self).items() if k != "report_to"}


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
    evaluation: dict[str, Any] | None = None  # what `evaluate` measured after training
    logs: Path | None = None  # the tracker's folder (`report_to`)


def fit(model: torch.nn.Module, epoch_batches: Callable[[int], Sequence[B]],
        step: Callable[[torch.nn.Module, B], StepOutput], cfg: LoopConfig, *,
        checkpoint_dir: Path | None = None, desc: str = "train", progress: bool = True,
        stop_after: int | None = None, lr_of: Callable[[str], float] | None = None,
        on_step: Callable[[int, int, float], bool] | None = None,
        evaluate: Callable[[], dict[str, Any]] | None = None, log_dir: Path | None = None) -> FitResult:
    """Train `model` in place. `stop_after` ends the run after that many optimizer steps (as an
    interruption would), keeping the checkpoint taken there. `on_step(step, total, loss)` hears
    of every optimizer step (live progress) and ends the run as an interruption when it answers
    True (a cancelled round). `lr_of` gives a parameter (by
    name) its own peak learning rate; the schedule scales every rate alike. `evaluate` measures
    the trained model (the main process, a run not interrupted); with `cfg.report_to`, the curves
    and its figures go to `log_dir`."""
    logs = log_dir if cfg.report_to != "none" else None
    accelerator = Accelerator(gradient_accumulation_steps=cfg.grad_accum, mixed_precision=cfg.mixed_precision,
                              log_with=None if logs is None else cfg.report_to,
                              project_dir=None if logs is None else logs.parent)
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
    if logs is not None:
        _start_tracking(accelerator, logs, cfg, fresh=done == 0)
        if progress and accelerator.is_main_process:  # to watch them while it trains
            tqdm.write(f"{desc}: curves at tensorboard --logdir {logs}", file=sys.stderr)
    model.train()
    history: list[dict[str, float]] = []
    seen, last_loss, t0 = 0, float("nan"), time.perf_counter()
    bar = tqdm(total=total_batches, initial=min(total_batches, done * cfg.grad_accum), desc=desc,
               disable=not progress or not accelerator.is_main_process)
    index = 0
    try:
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
                    record = {"loss": last_loss, "learning_rate": _learning_rate(optimizer, cfg), **out.stats}
                    history.append({"step": optimizer_steps, **record})
                    accelerator.log({f"train/{k}": v for k, v in record.items()}, step=optimizer_steps)
                    if checkpoint_dir is not None and optimizer_steps % cfg.checkpoint_every == 0:
                        _checkpoint(accelerator, checkpoint_dir, optimizer_steps)
                    stop = on_step is not None and on_step(optimizer_steps, total_steps, last_loss)
                    if stop or (stop_after is not None and optimizer_steps >= stop_after):
                        return FitResult(optimizer_steps, time.perf_counter() - t0, seen, last_loss, history, True,
                                         logs=logs)
        bar.close()  # before the evaluation's own bar
        model.eval()
        evaluation = evaluate() if evaluate is not None and accelerator.is_main_process else None
        if evaluation is not None:
            # the headline figures; counts, breakdowns and figures that could not be computed stay in the manifest
            accelerator.log({f"eval/{k}": v for k, v in evaluation.items() if isinstance(v, float)}, step=total_steps)
        return FitResult(total_steps, time.perf_counter() - t0, seen, last_loss, history, evaluation=evaluation,
                         logs=logs)
    finally:
        bar.close()
        # not `end_training()`: it also ends the processes' group, which a later `fit` in this process needs
        for tracker in accelerator.trackers:
            tracker.finish()


def _start_tracking(accelerator: Accelerator, logs: Path, cfg: LoopConfig, *, fresh: bool) -> None:
    """Open the run's trackers at `logs`, its settings stored beside the curves. A run that starts
    from the beginning draws its curves afresh; a resumed one goes on with those it drew."""
    if fresh and accelerator.is_main_process:
        shutil.rmtree(logs, ignore_errors=True)
    accelerator.init_trackers(logs.name, config=cfg.as_dict())


def _learning_rate(optimizer: torch.optim.Optimizer, cfg: LoopConfig) -> float:
    """The schedule's rate now: the peak `learning_rate` scaled as every group's rate is (a
    group with a peak of its own, such as a judge's head, follows the same curve)."""
    group = optimizer.param_groups[0]
    return cfg.learning_rate * group["lr"] / group["initial_lr"]


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
