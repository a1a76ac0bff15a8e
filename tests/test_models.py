"""The loader (local folder, GGUF file, hub id, adapter) and candidate sampling."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from training.errors import ModelLoadError
from training.generation import SamplingConfig, generate, sample_prompts
from training.loading import (
    gguf_cache_dir,
    load_causal_lm,
    load_sequence_classifier,
    load_tokenizer,
    resolve,
)
from training.prompts import DocPrompt, build_prompt

DOCS = [DocPrompt(1, "My neighbour mows his lawn at six every Sunday morning. How do I ask him to stop?",
                  "Lawn", "advice"),
        DocPrompt(2, "I saved $3,000 and want to learn to invest it without losing it all.",
                  "Saving", "personalfinance"),
        DocPrompt(3, "Our puppy chews every cable in the flat.", None, None)]


def test_local_folder_loads_on_cpu(tiny_lm: Path) -> None:
    model = load_causal_lm(tiny_lm, device="cpu")
    tok = load_tokenizer(tiny_lm)
    assert model.device.type == "cpu" and not model.training and tok.padding_side == "left"
    assert model(**tok("hello", return_tensors="pt")).logits.shape[-1] == len(tok)


def test_unknown_hub_id_fails_with_a_clear_message(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelLoadError, match="looked up as a hub id"):
        load_causal_lm("HuggingFaceTB/SmolLM2-135M-Instruct", device="cpu")
    with pytest.raises(ModelLoadError, match="no such file"):
        load_causal_lm("/nowhere/model.gguf")


def test_lora_adapter_is_applied(tiny_lm: Path, tmp_path: Path) -> None:
    from peft import LoraConfig, PeftModel, get_peft_model

    base = load_causal_lm(tiny_lm, device="cpu")
    peft_model = get_peft_model(base, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    peft_model.save_pretrained(tmp_path / "adapter")
    x = torch.tensor([[5, 6, 7]])
    plain = load_causal_lm(tiny_lm, device="cpu")(x).logits
    adapted = load_causal_lm(tiny_lm, device="cpu", adapter=tmp_path / "adapter")
    assert isinstance(adapted, PeftModel)
    assert not torch.allclose(adapted(x).logits, plain)
    assert torch.allclose(adapted(x).logits, peft_model.eval()(x).logits, atol=1e-5)


def test_encoder_gets_a_scalar_head(tiny_lm: Path) -> None:
    model = load_sequence_classifier(tiny_lm, num_labels=1, device="cpu")
    assert model(torch.tensor([[5, 6, 7]])).logits.shape == (1, 1)


def test_shared_prompt_decodes_like_separate_prompts_and_prefills_once(tiny_lm: Path) -> None:
    model, tok = load_causal_lm(tiny_lm, device="cpu"), load_tokenizer(tiny_lm)
    prompts = [build_prompt(tok, d, "chat") for d in DOCS]  # different lengths: left padding matters
    cfg = SamplingConfig(per_doc=3, top_k=1, max_new_tokens=12)  # top-k 1 is greedy
    lengths: list[int] = []
    hook = model.register_forward_pre_hook(lambda _m, args, kw: lengths.append(kw["input_ids"].shape[1]),
                                           with_kwargs=True)
    shared = sample_prompts(model, tok, prompts, cfg, share_prompt=True)
    hook.remove()
    separate = [sample_prompts(model, tok, [p], cfg, share_prompt=False)[0] for p in prompts]
    assert shared == separate
    longest = max(len(tok(p, add_special_tokens=False)["input_ids"]) for p in prompts)
    assert lengths[0] == longest - 1  # one prefill of the padded batch
    assert all(n == 1 for n in lengths[1:])  # then only one new token per step: the cache is reused


def test_generate_yields_distinct_samples_per_document(tiny_lm: Path) -> None:
    model, tok = load_causal_lm(tiny_lm, device="cpu"), load_tokenizer(tiny_lm)
    cfg = SamplingConfig(per_doc=4, temperature=1.0, max_new_tokens=8, batch_docs=2, seed=0)
    out = list(generate(model, tok, DOCS, cfg))
    assert [d.key for d, _ in out] == [1, 2, 3]
    for _, samples in out:
        texts = [s.text for s in samples]
        assert 1 <= len(texts) <= 4 and len(set(texts)) == len(texts) and all(t.strip() == t for t in texts)
        assert all(0 < s.token_count <= 8 for s in samples)
    again = list(generate(model, tok, DOCS, cfg))
    assert [[s.text for s in ss] for _, ss in again] == [[s.text for s in ss] for _, ss in out]


def test_tldr_template_has_the_classic_layout(tiny_lm: Path) -> None:
    tok = load_tokenizer(tiny_lm)
    assert build_prompt(tok, DOCS[0], "tldr") == (
        "SUBREDDIT: r/advice\nTITLE: Lawn\nPOST: " + DOCS[0].text + "\nTL;DR:")
    assert (DOCS[0].text in build_prompt(tok, DOCS[0], "auto")
            and "<|im_start|>assistant" in build_prompt(tok, DOCS[0], "auto"))


def test_long_posts_are_cut_to_the_token_budget(tiny_lm: Path) -> None:
    tok = load_tokenizer(tiny_lm)
    long_doc = DocPrompt(1, "word " * 2000)
    assert len(tok(build_prompt(tok, long_doc, "tldr", max_post_tokens=50))["input_ids"]) < 80


@pytest.mark.slow
def test_default_policy_from_its_gguf_file(default_policy: Path) -> None:
    assert resolve(default_policy).gguf_file == default_policy.name
    model, tok = load_causal_lm(default_policy, device="cpu"), load_tokenizer(default_policy)
    assert (gguf_cache_dir(resolve(default_policy)) / "config.json").exists()  # de-quantised once, cached
    assert model.config.model_type == "llama" and model.config.vocab_size == 49152 and tok.chat_template
    cfg = SamplingConfig(per_doc=2, max_new_tokens=24, seed=0)
    ((_, samples),) = list(generate(model, tok, DOCS[:1], cfg))
    assert samples and all(any(ch.isalpha() for ch in s.text) for s in samples)


def test_a_sampled_summary_keeps_no_control_characters() -> None:
    from training.prompts import clean_summary

    # A random or broken model emits NUL and other control bytes; PostgreSQL refuses NUL in text.
    assert clean_summary(" My\x00 landlord\x1b kept\tthe deposit.\r\nNow what?\x7f ", "chat") == \
        "My landlord kept\tthe deposit.\nNow what?"
