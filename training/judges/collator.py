"""Token layout for the judges (reward and ranking models): one post, many summaries, one row.

A TL;DR post is ~330 tokens and a summary ~40, and every post is judged with several summaries
(4.2 distinct ones per post in the human comparisons). A row holds the post once, followed by
each of its summaries, with an attention mask that keeps the summaries from reading each other
and the post from reading any summary. Two layouts:

- two towers (default): the post and each summary are encoded apart, each as the standalone
  sentence the encoder was trained on (`[CLS] text [SEP]`, positions from 0), and the judge
  compares their pooled vectors. The post passes through the backbone once per batch.
- `read_post`: each summary also reads the post (a cross-encoder); its positions continue the
  post's. Each summary gets exactly the hidden states it would get in a row of its own after
  the post, at the cost of the post once: about 2.5× fewer tokens than one `summary + post`
  sequence per summary on the TL;DR comparisons.

A segment is what is judged together: one summary for the reward model, the two summaries of a
comparison for the ranking model (they read each other). Parts of a segment are pooled apart:
encoders average a part's tokens (all-MiniLM-L6-v2 was trained with mean pooling; its [CLS]
and pooler were not), decoders take a part's last token, as a causal LM's scalar head does.
The summary is never cut to make room: the post is cut at its end.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from transformers import PretrainedConfig, PreTrainedTokenizerBase


def is_encoder(config: PretrainedConfig) -> bool:
    from transformers.models.auto.modeling_auto import MODEL_FOR_MASKED_LM_MAPPING_NAMES

    return config.model_type in MODEL_FOR_MASKED_LM_MAPPING_NAMES


ROW_SEGMENT_TOKENS = 512  # segment tokens that share one copy of the post


@dataclass
class PackedBatch:
    """Rows of `post, segment, segment, …` and where each segment's parts and post lie."""

    input_ids: torch.Tensor  # (rows, width)
    attention_mask: torch.Tensor  # (rows, 1, width, width) bool: may query i read key j
    position_ids: torch.Tensor
    token_type_ids: torch.Tensor | None
    parts: list[list[tuple[int, int, int]]]  # per segment, per part: (row, start, end)
    posts: list[tuple[int, int, int]]  # per segment: its post's (row, start, end)

    def model_inputs(self, device: torch.device) -> dict[str, torch.Tensor]:
        out = {"input_ids": self.input_ids, "attention_mask": self.attention_mask, "position_ids": self.position_ids}
        if self.token_type_ids is not None:
            out["token_type_ids"] = self.token_type_ids
        return {k: v.to(device) for k, v in out.items()}


@dataclass
class _Row:
    ids: list[int]
    positions: list[int]
    types: list[int]
    blocks: list[tuple[int, int, bool]]  # (start, end, reads the post)
    spans: list[list[tuple[int, int]]]  # per segment, per part

    @property
    def post_end(self) -> int:
        return self.blocks[0][1]


@dataclass
class JudgeCollator:
    """(document, segment) inputs to a packed batch; inputs that share a document share a row.

    `read_post`: segments attend to the post (a cross-encoder); otherwise the post and each
    segment are encoded apart in the same row (two towers), each as the standalone sentence the
    encoder was trained on, and the judge compares their pooled vectors."""

    tokenizer: PreTrainedTokenizerBase
    max_length: int = 256  # post + one segment, as the backbone sees it
    encoder: bool = True
    read_post: bool = False

    def __call__(self, documents: Sequence[str], segments: Sequence[Sequence[str]]) -> PackedBatch:
        tok = self.tokenizer
        by_doc: dict[str, list[int]] = {}
        for i, doc in enumerate(documents):
            by_doc.setdefault(doc, []).append(i)
        doc_ids = dict(zip(by_doc, tok(list(by_doc), add_special_tokens=False)["input_ids"], strict=True))
        flat = tok([p for seg in segments for p in seg], add_special_tokens=False)["input_ids"]
        filler = [tok.unk_token_id if tok.unk_token_id is not None else tok.eos_token_id]
        part_ids, k = [], 0
        for seg in segments:
            cap = max(1, (self.max_length // 2) // len(seg) - 1)  # a runaway text cannot crowd out the post
            part_ids.append([ids[:cap] or filler for ids in flat[k:k + len(seg)]])  # an empty text still pools
            k += len(seg)
        rows: list[tuple[str, list[int]]] = []
        for doc, members in by_doc.items():
            # a post with many summaries spreads over several rows: attention grows with the square
            rows.append((doc, []))
            used = 0
            for i in members:
                size = sum(len(p) + 1 for p in part_ids[i])
                if rows[-1][1] and used + size > ROW_SEGMENT_TOKENS:
                    rows.append((doc, []))
                    used = 0
                rows[-1][1].append(i)
                used += size
        # two towers read the post apart from its summaries: once per batch is enough
        first_row = {doc: r for r, (doc, _) in reversed(list(enumerate(rows)))}
        built = [self._row(doc_ids[doc], [part_ids[i] for i in members], self.read_post or first_row[doc] == r)
                 for r, (doc, members) in enumerate(rows)]
        width = max(len(row.ids) for row in built)
        n = len(built)
        input_ids = torch.full((n, width), tok.pad_token_id, dtype=torch.long)
        position_ids = torch.zeros((n, width), dtype=torch.long)
        token_types = torch.zeros((n, width), dtype=torch.long)
        # padding reads itself only, so no query row is empty (an all-masked row gives NaN)
        mask = torch.eye(width, dtype=torch.bool).repeat(n, 1, 1, 1)
        parts: list[list[tuple[int, int, int]]] = [[] for _ in segments]
        posts: list[tuple[int, int, int]] = [(0, 0, 0)] * len(segments)
        for r, (row, members) in enumerate(zip(built, (m for _, m in rows), strict=True)):
            input_ids[r, : len(row.ids)] = torch.tensor(row.ids)
            position_ids[r, : len(row.ids)] = torch.tensor(row.positions)
            token_types[r, : len(row.ids)] = torch.tensor(row.types)
            post_end = row.post_end
            for start, end, reads_post in row.blocks:
                block = torch.ones(end - start, end - start, dtype=torch.bool)
                mask[r, 0, start:end, start:end] = block if self.encoder else block.tril()
                if reads_post:
                    mask[r, 0, start:end, :post_end] = True
            post_row = first_row[rows[r][0]]
            for i, seg_spans in zip(members, row.spans, strict=True):
                parts[i] = [(r, s, e) for s, e in seg_spans]
                posts[i] = (post_row, 0, built[post_row].post_end)
        return PackedBatch(input_ids, mask, position_ids, token_types if self.encoder else None, parts, posts)

    def _row(self, doc: list[int], segments: list[list[list[int]]], with_post: bool) -> _Row:
        """One row: the post (unless an earlier row of two towers has it), then each segment;
        their positions, token types, attention blocks and each segment's part spans."""
        tok = self.tokenizer
        if self.encoder:
            cls, sep = [tok.cls_token_id], [tok.sep_token_id]
        else:
            cls = [tok.bos_token_id] if tok.bos_token_id is not None else []
            sep = []
        longest = max(sum(len(p) + len(sep) for p in seg) for seg in segments)
        if self.read_post:
            tail = sep if self.encoder else tok("\n\n", add_special_tokens=False)["input_ids"]
            room = max(0, self.max_length - len(cls) - len(tail) - longest)
        else:
            tail, room = sep, self.max_length - len(cls) - len(sep)
        post = [*cls, *doc[:room], *tail] if with_post else []
        post_end = len(post)
        row = _Row(post, list(range(post_end)), [0] * post_end, [(0, post_end, False)], [])
        for seg in segments:
            start = len(row.ids)
            # reading the post, a segment continues it (positions go on); otherwise it is a
            # standalone sentence (pair) with its own [CLS] and positions from 0
            first = post_end if self.read_post else 0
            if not self.read_post:
                row.ids.extend(cls)
            spans = []
            for k, part in enumerate(seg):
                part_start = start if k == 0 else len(row.ids)
                row.ids.extend([*part, *sep])
                # encoders pool a part with its markers, as the sentence encoder was trained; decoders
                # read its last text token
                spans.append((part_start, len(row.ids) if self.encoder else len(row.ids) - len(sep)))
                row.types.extend([min(k + self.read_post, 1)] * (len(row.ids) - len(row.types)))
            row.positions.extend(range(first, first + len(row.ids) - start))
            row.blocks.append((start, len(row.ids), self.read_post))
            row.spans.append(spans)
        return row
