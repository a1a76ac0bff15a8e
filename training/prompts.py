"""Prompt layouts for summarisation: the model's chat template, or the classic TL;DR layout."""
from __future__ import annotations

from dataclasses import dataclass

from transformers import PreTrainedTokenizerBase

from annotate.export import format_post

TEMPLATES = ("auto", "chat", "tldr")
INSTRUCTION = "Summarize this Reddit post in one or two sentences (a TL;DR)."


@dataclass(frozen=True)
class DocPrompt:
    """What a prompt is built from; `key` is the caller's handle (a document id, a file line)."""

    key: object
    text: str
    title: str | None = None
    subreddit: str | None = None


def resolve_template(tokenizer: PreTrainedTokenizerBase, template: str) -> str:
    if template not in TEMPLATES:
        raise ValueError(f"unknown prompt template {template!r}; use one of {', '.join(TEMPLATES)}")
    if template == "auto":
        return "chat" if tokenizer.chat_template else "tldr"
    return template


def _truncate(tokenizer: PreTrainedTokenizerBase, text: str, max_tokens: int) -> str:
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    if len(ids) <= max_tokens:
        return text
    cut = tokenizer.decode(ids[:max_tokens])
    assert isinstance(cut, str)  # one sequence: one string (`decode` is typed for batches too)
    return cut.rstrip() + " …"


def build_prompt(tokenizer: PreTrainedTokenizerBase, doc: DocPrompt, template: str,
                 max_post_tokens: int = 512) -> str:
    """The text the policy continues with a summary; long posts are cut to `max_post_tokens`."""
    block = format_post(doc.subreddit, doc.title, _truncate(tokenizer, doc.text, max_post_tokens))
    if resolve_template(tokenizer, template) == "chat":
        messages = [{"role": "user", "content": f"{INSTRUCTION}\n\n{block}"}]
        prompt = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        assert isinstance(prompt, str)  # untokenized: the text (the return type covers token ids too)
        return prompt
    return f"{block}\nTL;DR:"


# A model can emit any character; control characters (NUL among them, which PostgreSQL refuses
# to store) are no part of a summary a person reads. Tab and newline are.
_CONTROL = dict.fromkeys([*range(0, 9), *range(11, 32), 127])


def clean_summary(text: str, template: str) -> str:
    """The summary proper, without control characters: the TL;DR layout has no end marker, so
    stop at the first blank line."""
    text = text.translate(_CONTROL).strip()
    if template == "tldr":
        text = text.split("\n\n", 1)[0].strip()
    return text
