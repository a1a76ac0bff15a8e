"""Training throughput and peak memory of one SLiC-HF step against TRL's DPOTrainer (hinge loss).

Same model (the default SmolLM2-135M policy), same LoRA settings, same data (real TL;DR posts
in the chat template, ~490-token prompts, pairs from `pairs_train.jsonl`) and the same batch
size. SLiC-HF scores y+, y- and y_ref with the policy alone; DPO scores y+ and y- with the
policy and again with the reference (the base with the adapter switched off). Each method runs
in its own process; peak memory is the highest resident size sampled every 5 ms during the
steps, less the size before the first one (on a GPU: torch's peak allocation).

    .venv/bin/python bench/slic_step.py [--batch 4] [--steps 5] [--json]

Methods: slic (shared prefix, target-only chunked log-probs), slic-full (every sequence
with its prompt), slic-bf16 (bf16 autocast on the CPU), dpo-hinge (TRL). TRL is needed only
here: `pip install trl`.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PAIRS = ROOT.parent / "shared" / "data" / "tldr" / "pairs_train.jsonl"
METHODS = ("slic", "dpo-hinge", "slic-full", "slic-bf16")


class PeakRss:
    """Highest resident set size seen while running, sampled from /proc."""

    def __init__(self) -> None:
        self.peak = self.start = self._rss()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    @staticmethod
    def _rss() -> int:
        return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    def _watch(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._rss())
            time.sleep(0.005)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def _examples(tokenizer, n: int) -> list[dict[str, str]]:  # type: ignore[no-untyped-def]
    from training.judges.pairs import read_pairs
    from training.prompts import DocPrompt, build_prompt
    from training.slic.data import document_from_prompt

    out = []
    for p in read_pairs(PAIRS, n):
        d = document_from_prompt("x", p.prompt)
        prompt = build_prompt(tokenizer, DocPrompt(0, d.text, d.title, d.subreddit), "chat", 512)
        out.append({"prompt": prompt, "chosen": p.chosen, "rejected": p.rejected})
    return out


def run_method(method: str, batch: int, steps: int) -> dict[str, object]:
    import torch

    from training.defaults import POLICY
    from training.loading import load_causal_lm, load_tokenizer
    from training.slic.collator import SlicExample
    from training.slic.config import SlicConfig
    from training.slic.trainer import (
        SequenceScorer,
        add_policy_lora,
        policy_collator,
        slic_step,
    )

    torch.manual_seed(0)
    models_dir = Path(os.environ.get("CALIBRA_MODELS_DIR", ROOT / ".calibra" / "models"))
    policy = POLICY.path(models_dir)
    tokenizer = load_tokenizer(policy)
    data = _examples(tokenizer, batch)
    cfg = SlicConfig(shared_prefix=method != "slic-full", cpu_bf16=method == "slic-bf16")
    base = load_causal_lm(policy, dtype=torch.float32)
    device = base.device
    if method.startswith("slic"):
        model = add_policy_lora(base, cfg)
        scorer = SequenceScorer(model, cfg)
        slic_batch = policy_collator(tokenizer, cfg)([SlicExample(d["prompt"], d["chosen"], d["rejected"], d["chosen"])
                                                      for d in data])
        sequences, tokens = 3 * batch, slic_batch.tokens

        def one_step() -> float:
            out = slic_step(scorer, slic_batch, cfg)
            out.loss.backward()
            return float(out.loss)
    else:
        from datasets import Dataset
        from peft import LoraConfig
        from trl import DPOConfig, DPOTrainer

        lora = LoraConfig(task_type="CAUSAL_LM", r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                          target_modules=cfg.lora_targets.split(","))
        args = DPOConfig(output_dir=tempfile.mkdtemp(), per_device_train_batch_size=batch, loss_type=["hinge"],
                         max_length=2048, report_to=[], learning_rate=cfg.learning_rate, use_cpu=device.type == "cpu",
                         bf16=device.type == "cuda", logging_steps=1000, save_strategy="no", dataloader_num_workers=0)
        trainer = DPOTrainer(model=base, args=args, train_dataset=Dataset.from_list(data), processing_class=tokenizer,
                             peft_config=lora)
        model = trainer.model
        trainer.current_gradient_accumulation_steps = 1  # set by Trainer.train(), which is not used here
        inputs = next(iter(trainer.get_train_dataloader()))
        sequences = 2 * batch
        tokens = int(inputs["attention_mask"].sum())

        def one_step() -> float:
            return float(trainer.training_step(model, inputs))
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=cfg.learning_rate)
    model.train()
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
    # memory is watched from before the first step: what a step needs on top of the weights
    with PeakRss() as rss:
        first_loss = one_step()  # warm-up: allocator, kernels; not timed
        opt.step()
        opt.zero_grad()
        start = time.perf_counter()
        for _ in range(steps):
            one_step()
            opt.step()
            opt.zero_grad()
        if device.type == "cuda":
            torch.cuda.synchronize()
        seconds = (time.perf_counter() - start) / steps
    peak = (torch.cuda.max_memory_allocated() - before) if device.type == "cuda" else rss.peak - rss.start
    return {"method": method, "seconds_per_step": seconds, "pairs_per_s": batch / seconds,
            "sequences_per_s": sequences / seconds, "tokens_per_s": tokens / seconds,
            "peak_memory_mib": peak / 2**20, "device": str(device),
            "first_loss": first_loss}  # the same data and weights: how far bf16 moves the loss


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--one", help=argparse.SUPPRESS)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    if args.one:
        print(json.dumps(run_method(args.one, args.batch, args.steps)))
        return
    results = {}
    for method in args.methods.split(","):
        out = subprocess.run([sys.executable, __file__, "--one", method, "--batch", str(args.batch), "--steps",
                              str(args.steps)], capture_output=True, text=True, cwd=ROOT,
                             env={**os.environ, "PYTHONPATH": str(ROOT)})
        if out.returncode != 0:
            raise SystemExit(f"{method} failed:\n{out.stderr[-3000:]}")
        results[method] = json.loads(out.stdout.strip().splitlines()[-1])
        print(json.dumps(results[method]), file=sys.stderr, flush=True)  # each as it finishes
    summary = {"batch": args.batch, "steps": args.steps, "results": results}
    if "dpo-hinge" in results and "slic" in results:
        summary["slic_vs_dpo_throughput"] = results["slic"]["pairs_per_s"] / results["dpo-hinge"]["pairs_per_s"]
        summary["slic_vs_dpo_peak_memory"] = (results["slic"]["peak_memory_mib"]
                                              / results["dpo-hinge"]["peak_memory_mib"])
    if "slic-bf16" in results and "slic" in results:
        summary["bf16_vs_fp32_throughput"] = results["slic-bf16"]["pairs_per_s"] / results["slic"]["pairs_per_s"]
        summary["bf16_vs_fp32_loss_difference"] = results["slic-bf16"]["first_loss"] - results["slic"]["first_loss"]
    summary.update(date=datetime.now(UTC).isoformat(timespec="seconds"), cpus=os.cpu_count(),
                   python=platform.python_version())
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
