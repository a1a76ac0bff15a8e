"""The three stages of a SLiC-HF round on documents: sample-rank, train, evaluate.

Each stage reads and writes files in the round's folder (`round.jsonl`, `adapter/`,
`eval.json`), so each can run alone, be inspected, and resume after an interruption; the
database side (which documents, storing candidates and scores, registering the new policy)
is in `slic_store`.
"""
from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from annotate.export import repeats_layout
from training.artifacts import write_json
from training.generation import SamplingConfig, generate
from training.judges.trainer import load_judge
from training.loading import load_causal_lm, load_tokenizer
from training.prompts import DocPrompt, build_prompt, resolve_template
from training.slic.config import RoundSampling, SlicConfig
from training.slic.data import RankedDocument, RoundDocument, read_round, sample_rank, sft_examples, slic_examples
from training.slic.eval import compare_policies, length_stats, mean_logprob, rouge_against_references
from training.slic.trainer import SlicResult, policy_collator, train_slic

SLIC_SAMPLING = RoundSampling().sampling()  # the paper's m, temperature and top-k


@dataclass(frozen=True)
class Policy:
    base: str  # hub id, folder or GGUF
    adapter: str | None = None  # LoRA adapter of an earlier round


@dataclass(frozen=True)
class RoundFiles:
    folder: Path

    @property
    def data(self) -> Path:
        return self.folder / "round.jsonl"

    @property
    def adapter(self) -> Path:
        return self.folder / "adapter"

    @property
    def evaluation(self) -> Path:
        return self.folder / "eval.json"


def _sampler(policy: Policy, sampling: SamplingConfig, device: str,
             progress: bool) -> Callable[[list[DocPrompt]], Iterator[tuple[DocPrompt, list[str]]]]:
    tokenizer = load_tokenizer(policy.base)
    model = load_causal_lm(policy.base, device=device, adapter=policy.adapter)

    def sample(prompts: list[DocPrompt]) -> Iterator[tuple[DocPrompt, list[str]]]:
        with tqdm(total=len(prompts), desc="sampling", unit="doc", disable=not progress) as bar:
            for doc, samples in generate(model, tokenizer, prompts, sampling):
                bar.update()
                yield doc, [s.text for s in samples]
    return sample


def run_sample_rank(policy: Policy, docs: Sequence[RoundDocument], judge_kind: str, judge_path: str,
                    files: RoundFiles, *, sampling: SamplingConfig = SLIC_SAMPLING, device: str = "auto",
                    progress: bool = True,
                    on_document: Callable[[RankedDocument], None] | None = None) -> list[RankedDocument]:
    """Sample m candidates per document and rank them; `on_document` sees each as it is done
    (the CLI stores them in the database)."""
    judge = load_judge(judge_kind, judge_path, device=device)
    return sample_rank(docs, _sampler(policy, sampling, device, progress),
                       judge.rank, f"{judge_kind}:{judge_path}",
                       files.data, on_document)


def run_train(policy: Policy, records: Sequence[RankedDocument], cfg: SlicConfig, files: RoundFiles, *,
              device: str = "auto", progress: bool = True, stop_after: int | None = None,
              on_step: Callable[[int, int, float], bool] | None = None) -> SlicResult:
    tokenizer = load_tokenizer(policy.base)
    template = resolve_template(tokenizer, cfg.template)
    examples = slic_examples(records, tokenizer, template, cfg.y_ref, cfg.max_prompt_tokens, cfg.pairs_per_document)
    return train_slic(policy.base, examples, cfg, out=files.adapter, adapter=policy.adapter, device=device,
                      progress=progress, stop_after=stop_after, on_step=on_step,
                      extra={"documents": len(records), "pairs": len(examples)})


def run_sft(policy: Policy, docs: Sequence[RoundDocument], cfg: SlicConfig, files: RoundFiles, *,
            preferred: dict[str, list[str]] | None = None, device: str = "auto", progress: bool = True,
            on_step: Callable[[int, int, float], bool] | None = None) -> SlicResult:
    """Supervised fine-tuning (`cfg.sft`) on each document's human reference and, when given,
    its human-preferred summaries ("continue fine-tuning on the preferred", SLiC-HF's baseline)."""
    tokenizer = load_tokenizer(policy.base)
    template = resolve_template(tokenizer, cfg.template)
    examples = sft_examples(docs, tokenizer, template, cfg.max_prompt_tokens, preferred or {})
    return train_slic(policy.base, examples, cfg, out=files.adapter, adapter=policy.adapter, device=device,
                      progress=progress, on_step=on_step, extra={"documents": len(docs), "pairs": len(examples)})


def run_evaluation(new: Policy, previous: Policy, docs: Sequence[RoundDocument], judges: dict[str, tuple[str, str]],
                   files: RoundFiles, *, sampling: SamplingConfig, cfg: SlicConfig, device: str = "auto",
                   progress: bool = True) -> dict[str, Any]:
    """Sample one summary per document from each policy and compare them; the result is also
    written to the round's `eval.json`."""
    started = time.perf_counter()
    tokenizer = load_tokenizer(new.base)
    template = resolve_template(tokenizer, sampling.template)
    prompts = [d.prompt() for d in docs]
    texts: dict[str, list[str]] = {}
    logprob: dict[str, float | None] = {}
    refs = [d.reference for d in docs]
    with_ref = [i for i, r in enumerate(refs) if r]
    for label, policy in (("new", new), ("previous", previous)):
        model = load_causal_lm(policy.base, device=device, adapter=policy.adapter)
        # one sample per document, as many sequences per batch as sampling m per document used
        single = SamplingConfig(**{**asdict(sampling), "per_doc": 1,
                                   "batch_docs": sampling.batch_docs * sampling.per_doc})
        out: dict[object, str] = {}
        for doc, samples in tqdm(generate(model, tokenizer, prompts, single), total=len(prompts), unit="doc",
                                 desc=f"sampling ({label} policy)", disable=not progress):
            out[doc.key] = samples[0].text if samples else ""
        texts[label] = [out[p.key] for p in prompts]
        policy_prompts = [build_prompt(tokenizer, prompts[i], template, cfg.max_prompt_tokens) for i in with_ref]
        logprob[label] = mean_logprob(model, policy_collator(tokenizer, cfg), policy_prompts,
                                      [refs[i] or "" for i in with_ref])
        del model
    loaded = {name: load_judge(kind, path, device=device) for name, (kind, path) in judges.items()}
    posts = [d.post() for d in docs]
    result: dict[str, Any] = {
        "documents": len(docs),
        "judged_by": compare_policies(loaded, posts, texts["new"], texts["previous"], refs),
        "length": {label: length_stats(tokenizer, t) for label, t in texts.items()},
        # share of samples that restate the prompt's layout instead of summarising (the judges
        # cannot tell; win rates overrule them there, as the ranking does)
        "repeats_layout": {label: sum(map(repeats_layout, t)) / max(1, len(t)) for label, t in texts.items()},
        "reference_logprob": logprob,
        # judge-free: the samples against the human references, beside copying the post's lead
        "rouge_l": rouge_against_references(texts, [d.text for d in docs], refs),
        "seconds": time.perf_counter() - started,
        "samples": [{"key": d.key, "new": n, "previous": p} for d, n, p in zip(docs, texts["new"], texts["previous"],
                                                                               strict=True)],
    }
    old_words = result["length"]["previous"]["mean_words"]
    result["length_change"] = result["length"]["new"]["mean_words"] / old_words - 1 if old_words else None
    write_json(files.evaluation, result)
    return result


def load_round(files: RoundFiles) -> list[RankedDocument]:
    return read_round(files.data)


def evaluation_summary(result: dict[str, Any]) -> dict[str, Any]:
    """The headline numbers of an evaluation (for a model version's metrics and the CLI)."""
    out: dict[str, Any] = {"documents": result["documents"], "length_change": result["length_change"],
                           "mean_words": {k: v["mean_words"] for k, v in result["length"].items()},
                           "reference_logprob": result["reference_logprob"],
                           "repeats_layout": result["repeats_layout"], "rouge_l": result.get("rouge_l")}
    for name, judged in result["judged_by"].items():
        for comparison, stats in judged.items():
            out[f"{name}_{comparison}_win_rate"] = stats["win_rate"]
            out[f"{name}_{comparison}_judge_alone"] = stats["judge_alone_win_rate"]
            out[f"{name}_{comparison}_length_controlled"] = stats["length_controlled_win_rate"]
    return out
