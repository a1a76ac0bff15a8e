"""Throughput of candidate generation with the default policy (SmolLM2-135M-Instruct).

Two ways of sampling K candidates for each of the same TL;DR posts, timed in one run:

- batched: what `calibra generate` does. `batch_docs` documents go through together, each
  prompt is prefilled once and its cache shared by its K samples (`sample_prompts` with
  `share_prompt=True`, called as `training.generation.generate` calls it);
- single: one sequence at a time. Each of the K samples of a document is its own call with
  batch size 1 (`sample_prompts` on one prompt with `per_doc=1`).

Candidates are samples produced (before `generate` drops empty and duplicate ones); tokens are
the generated tokens up to EOS. Prompts are built before timing, and one small warm-up call
runs first. The target: batched throughput at least 3x the one-at-a-time throughput.

Run from the repository root (the policy is looked up in $CALIBRA_MODELS_DIR, by default
.calibra/models):

    .venv/bin/python bench/generate.py [--docs 8 --per-doc 4 --batch-docs 4 --json]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import time
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from training.defaults import POLICY
from training.generation import SamplingConfig, sample_prompts
from training.loading import load_causal_lm, load_tokenizer
from training.prompts import DocPrompt, build_prompt, resolve_template

REPO = Path(__file__).resolve().parent.parent
POSTS = REPO.parent / "shared" / "data" / "tldr" / "posts_test400.jsonl"
SEED = 1234


@dataclass(frozen=True)
class Timing:
    mode: str
    seconds: float
    candidates: int
    tokens: int

    @property
    def candidates_per_s(self) -> float:
        return self.candidates / self.seconds

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.seconds


def read_posts(path: Path, limit: int) -> list[DocPrompt]:
    docs = []
    with path.open() as fh:
        for line in fh:
            if len(docs) == limit:
                break
            row = json.loads(line)
            docs.append(DocPrompt(row["instruction_id"], row["instruction"], row["title"], row["subreddit"]))
    return docs


def time_batched(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, prompts: list[str],
                 cfg: SamplingConfig) -> Timing:
    candidates = tokens = 0
    start = time.perf_counter()
    for first in range(0, len(prompts), cfg.batch_docs):
        rows = sample_prompts(model, tokenizer, prompts[first:first + cfg.batch_docs], cfg,
                              share_prompt=True, generator_seed=SEED + first)
        for row in rows:
            candidates += len(row)
            tokens += sum(n for _, n in row)
    return Timing("batched", time.perf_counter() - start, candidates, tokens)


def time_single(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, prompts: list[str],
                cfg: SamplingConfig) -> Timing:
    one = replace(cfg, per_doc=1, batch_docs=1)
    candidates = tokens = 0
    start = time.perf_counter()
    for i, prompt in enumerate(prompts):
        for j in range(cfg.per_doc):
            [[(_, n)]] = sample_prompts(model, tokenizer, [prompt], one,
                                        generator_seed=SEED + i * cfg.per_doc + j)
            candidates += 1
            tokens += n
    return Timing("single", time.perf_counter() - start, candidates, tokens)


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--docs", type=int, default=8, help="documents (first lines of posts_test400.jsonl)")
    parser.add_argument("--per-doc", type=int, default=4, help="samples per document (K)")
    parser.add_argument("--batch-docs", type=int, default=4, help="documents per batch in batched mode")
    parser.add_argument("--max-new-tokens", type=int, default=48)
    parser.add_argument("--models-dir", type=Path,
                        default=Path(os.environ.get("CALIBRA_MODELS_DIR", REPO / ".calibra" / "models")))
    parser.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    args = parser.parse_args()

    policy = POLICY.path(args.models_dir)
    if not policy.exists():
        parser.error(f"no policy at {policy}; set CALIBRA_MODELS_DIR or --models-dir, or run `calibra models fetch`")
    tokenizer = load_tokenizer(policy)
    model = load_causal_lm(policy, device=args.device)
    cfg = SamplingConfig(per_doc=args.per_doc, temperature=0.7, top_k=40, max_new_tokens=args.max_new_tokens,
                         template="auto", batch_docs=args.batch_docs, seed=SEED)
    template = resolve_template(tokenizer, cfg.template)
    docs = read_posts(POSTS, args.docs)
    prompts = [build_prompt(tokenizer, d, template, cfg.max_post_tokens) for d in docs]

    warm_up = replace(cfg, per_doc=2, max_new_tokens=4)
    sample_prompts(model, tokenizer, prompts[:2], warm_up, generator_seed=SEED)

    batched = time_batched(model, tokenizer, prompts, cfg)
    single = time_single(model, tokenizer, prompts, cfg)
    report = {
        "docs": len(docs), "per_doc": cfg.per_doc, "batch_docs": cfg.batch_docs,
        "max_new_tokens": cfg.max_new_tokens, "template": template, "device": args.device,
        "modes": {t.mode: {"seconds": round(t.seconds, 2), "candidates": t.candidates, "tokens": t.tokens,
                           "candidates_per_s": round(t.candidates_per_s, 3),
                           "tokens_per_s": round(t.tokens_per_s, 2)} for t in (batched, single)},
        "speedup": round(batched.candidates_per_s / single.candidates_per_s, 2),
        "torch": torch.__version__, "threads": torch.get_num_threads(), "cpu": cpu_model(),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    if args.json:
        print(json.dumps(report, indent=2))
        return
    print(f"{report['docs']} docs x {report['per_doc']} samples, batch_docs {report['batch_docs']}, "
          f"max_new_tokens {report['max_new_tokens']}, template {template}, device {args.device}")
    print(f"{'mode':<8} {'seconds':>8} {'cands':>6} {'tokens':>7} {'cands/s':>8} {'tokens/s':>9}")
    for t in (batched, single):
        print(f"{t.mode:<8} {t.seconds:>8.1f} {t.candidates:>6} {t.tokens:>7} "
              f"{t.candidates_per_s:>8.2f} {t.tokens_per_s:>9.1f}")
    print(f"speedup (batched / single candidates/s): {report['speedup']:.2f}x (target >= 3x)")
    print(f"torch {report['torch']}, {report['threads']} threads, {report['cpu']}, {report['date']}")


if __name__ == "__main__":
    main()
