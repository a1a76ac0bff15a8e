"""The TL;DR prompt layout (`SUBREDDIT: r/… TITLE: … POST: …`): written by the export and the
policy's prompts, read back by the import of pair files and by the judges.

One module, so what the reward model is trained on is what the policy is asked, and a file from
the TL;DR release reads the same as the app's own export.
"""
from __future__ import annotations

import re

# The title runs to the first "POST:" after whitespace (parts are stripped after matching).
# No two neighbouring quantifiers may both match whitespace: the former `TITLE:\s*(.*?)\s+POST:`
# backtracked in cubic time, and a title of 2,000 spaces without a POST: took half a minute.
TLDR_PROMPT = re.compile(r"^\s*(?:SUBREDDIT:\s*(?:r/)?(?P<sub>\S+)\s+)?(?:TITLE:(?P<title>.*?)\s)?"
                         r"POST:\s*(?P<post>.*)$", re.S)
TLDR_PREFIX = re.compile(r"^\s*TL;DR:\s*", re.I)


def format_post(subreddit: str | None, title: str | None, text: str) -> str:
    """The TL;DR layout: SUBREDDIT / TITLE / POST lines (the first two when known). Exported
    prompts and the policy's prompts share it, so what the reward model is trained on is what
    the policy is asked."""
    parts = [f"SUBREDDIT: r/{subreddit}" if subreddit else None, f"TITLE: {title}" if title else None,
             f"POST: {text}"]
    return "\n".join(p for p in parts if p)


LAYOUT_MARKER = re.compile(r"\b(?:SUBREDDIT|TITLE|POST):")


def repeats_layout(summary: str) -> bool:
    """Whether a summary restates the prompt's layout lines (SUBREDDIT: / TITLE: / POST:) rather
    than summarising: none of the 14,520 summaries of the TL;DR comparisons does, a small policy
    often does, and a judge trained on human comparisons has never seen one."""
    return LAYOUT_MARKER.search(summary) is not None


def prompt_parts(prompt: str) -> tuple[str, str | None, str | None] | None:
    """(post, title, subreddit) of a prompt in the TL;DR layout; None for any other prompt."""
    match = TLDR_PROMPT.match(prompt)
    if not match:
        return None
    return match["post"].strip(), (match["title"] or "").strip() or None, match["sub"]


def split_prompt(prompt: str) -> tuple[str, str | None, str | None]:
    """(post, title, subreddit) of a prompt in the TL;DR layout ("SUBREDDIT: … TITLE: …
    POST: …", on one line or several, as `format_post` writes it or the TL;DR files do); a
    prompt in another layout is all post."""
    return prompt_parts(prompt) or (prompt, None, None)


def canonical_prompt(prompt: str) -> str:
    """A TL;DR-layout prompt rewritten as `format_post` writes it, so a judge trained on a
    TL;DR file reads posts the way the app presents its own; other prompts are kept."""
    parts = prompt_parts(prompt)
    return format_post(parts[2], parts[1], parts[0]) if parts else prompt


def bare_summary(text: str) -> str:
    """A summary without the "TL;DR:" prefix the TL;DR files give every summary (the app
    stores summaries bare)."""
    return TLDR_PREFIX.sub("", text).strip()
