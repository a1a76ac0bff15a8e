"""Token layout for the judges (reward and ranking models): the summary is kept whole.

A post is ~330 tokens and longer ones pass the backbone's limit; the summary (~40 tokens) is
what is being judged, so it is never the part cut. Encoders read `[CLS] summary [SEP] post
[SEP]` with the post truncated at its end; decoders (a causal LM with a scalar head reads its
last token) read `post … summary`, the post cut so that the summary stays last and whole.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from transformers import PretrainedConfig, PreTrainedTokenizerBase


def is_encoder(config: PretrainedConfig) -> bool:
    from transformers.models.auto.modeling_auto import MODEL_FOR_MASKED_LM_MAPPING_NAMES

    return config.model_type in MODEL_FOR_MASKED_LM_MAPPING_NAMES


@dataclass
class JudgeCollator:
    """(document, text) pairs to a padded batch; `text` is a summary, or both summaries of a
    pair for the ranking model."""

    tokenizer: PreTrainedTokenizerBase
    max_length: int = 384
    encoder: bool = True

    def __call__(self, documents: Sequence[str], texts: Sequence[str]) -> dict[str, torch.Tensor]:
        tok = self.tokenizer
        text_ids = tok(list(texts), add_special_tokens=False)["input_ids"]
        doc_ids = tok(list(documents), add_special_tokens=False)["input_ids"]
        rows, types = [], []
        for doc, text in zip(doc_ids, text_ids, strict=True):
            text = text[: self.max_length // 2 if len(doc) else self.max_length - 3]  # a runaway text cannot crowd out the post
            if self.encoder:
                room = self.max_length - len(text) - 3
                ids = [tok.cls_token_id, *text, tok.sep_token_id, *doc[:room], tok.sep_token_id]
                types.append([0] * (len(text) + 2) + [1] * (len(ids) - len(text) - 2))
            else:
                head = [tok.bos_token_id] if tok.bos_token_id is not None else []
                sep = tok("\n\n", add_special_tokens=False)["input_ids"]
                room = self.max_length - len(head) - len(sep) - len(text)
                ids = [*head, *doc[:room], *sep, *text]
            rows.append(ids)
        width = max(len(r) for r in rows)
        pad = tok.pad_token_id
        # right padding: encoders ignore it by mask, decoders' scalar heads find the last real token
        input_ids = torch.full((len(rows), width), pad, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, ids in enumerate(rows):
            input_ids[i, : len(ids)] = torch.tensor(ids)
            mask[i, : len(ids)] = 1
        batch = {"input_ids": input_ids, "attention_mask": mask}
        if self.encoder:
            token_types = torch.zeros_like(input_ids)
            for i, t in enumerate(types):
                token_types[i, : len(t)] = torch.tensor(t)
            batch["token_type_ids"] = token_types
        return batch
