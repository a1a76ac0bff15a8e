"""How far cheap signals carry a judge on the TL;DR comparisons, on the split of bench/reward_tldr.py.

The ranking model's target (held-out accuracy ≥ 0.62 with all-MiniLM-L6-v2) sits above every
judge trained so far (reward model 0.604, ranker 0.574). This measures what the data and the
backbone offer beyond them, with models that train in seconds once the texts are embedded:

- features of each summary: the frozen encoder's cosine with the post, with its sentences
  (best, top three, mean: coverage), the word count, and surface statistics (share of words and
  bigrams found in the post, repeated trigrams, distinct words, final punctuation, sentences);
- fitted on feature differences in both orders, so P(A ≻ B) = 1 − P(B ≻ A): a logistic
  regression and gradient-boosted trees (fixed settings), each also cross-validated over 5 folds
  of training posts beside its held-out accuracy;
- with `--reward DIR` (a reward model trained on the same training side): the reward model's
  own accuracy, its average with the boosted trees, and a pairwise head over its towers that
  reads both summaries (A·post, B·post, A·B, |A − B|), started as the reward model's head, as a
  joint ranker would be (no cross-validation: the towers learned the training side). Its towers
  embed texts apart with this script's pooling (256 tokens each), close to but not exactly the
  reward model's own input layout.

    .venv/bin/python bench/judge_ceiling.py --reward .calibra/bench/reward-tldr --json
"""
from __future__ import annotations

import argparse
import copy
import json
import math
import os
import re
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from itertools import pairwise
from pathlib import Path

import numpy as np
import torch
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GroupKFold
from transformers import AutoModel, AutoTokenizer

from training.defaults import ENCODER
from training.judges.metrics import pair_metrics
from training.judges.pairs import PreferencePair, read_pairs, split_by_document
from training.judges.scalar_model import scalar_head
from training.judges.trainer import judge_probabilities, load_judge

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "tldr" / "pairs_train.jsonl"
WORD = re.compile(r"[a-z0-9']+")
Fit = Callable[[np.ndarray], np.ndarray]  # feature differences -> P(A ≻ B)


@torch.no_grad()
def embed(folder: Path, texts: Sequence[str], max_length: int, batch: int = 32) -> dict[str, np.ndarray]:
    """Unit-length mean-pooled vectors, as the sentence encoder was trained (and as the towers pool)."""
    tokenizer, model = AutoTokenizer.from_pretrained(folder), AutoModel.from_pretrained(folder).eval()
    order = sorted(set(texts), key=len)  # similar lengths share a batch: less padding
    out: dict[str, np.ndarray] = {}
    for i in range(0, len(order), batch):
        chunk = order[i:i + batch]
        enc = tokenizer(chunk, truncation=True, max_length=max_length, padding=True, return_tensors="pt")
        mask = enc["attention_mask"][..., None].float()
        pooled = (model(**enc).last_hidden_state * mask).sum(1) / mask.sum(1)
        out.update(zip(chunk, torch.nn.functional.normalize(pooled, dim=-1).numpy(), strict=True))
    return out


def post_body(prompt: str) -> str:
    return prompt.split("POST:", 1)[-1]


def sentences(prompt: str) -> list[str]:
    found = [s.strip() for s in re.split(r"(?<=[.!?])\s+|\n+", post_body(prompt)) if len(s.split()) >= 3]
    return found or [post_body(prompt)]


def summary_features(prompt: str, summary: str, vec: dict[str, np.ndarray]) -> list[float]:
    body = summary.removeprefix("TL;DR:").strip()
    sw, pw = WORD.findall(body.lower()), WORD.findall(post_body(prompt).lower())
    post_words, post_bigrams = set(pw), set(pairwise(pw))
    bigrams, trigrams = list(pairwise(sw)), list(zip(sw, sw[1:], sw[2:], strict=False))
    to_sentences = np.sort([vec[s] @ vec[summary] for s in sentences(prompt)])
    return [float(vec[prompt] @ vec[summary]), to_sentences[-1], to_sentences[-3:].mean(), to_sentences.mean(),
            math.log1p(len(sw)),
            sum(w in post_words for w in sw) / max(1, len(sw)),
            sum(g in post_bigrams for g in bigrams) / max(1, len(bigrams)),
            1 - len(set(trigrams)) / max(1, len(trigrams)),
            len(set(sw)) / max(1, len(sw)),
            float(body[-1:] in ".!?"),
            len(re.findall(r"[.!?](?:\s|$)", body))]


def differences(pairs: Sequence[PreferencePair], vec: dict[str, np.ndarray]) -> np.ndarray:
    return np.array([np.subtract(summary_features(p.prompt, p.chosen, vec), summary_features(p.prompt, p.rejected, vec))
                     for p in pairs])


def fit_linear(x: np.ndarray) -> Fit:
    both, labels = np.vstack([x, -x]), np.r_[np.ones(len(x)), np.zeros(len(x))]
    scale = both.std(0) + 1e-9
    model = LogisticRegression(fit_intercept=False, max_iter=2000).fit(both / scale, labels)
    return lambda z: model.predict_proba(z / scale)[:, 1]


def fit_boosted(x: np.ndarray) -> Fit:
    both, labels = np.vstack([x, -x]), np.r_[np.ones(len(x)), np.zeros(len(x))]
    # no early stopping: its validation split would hold mirror copies of its training pairs
    model = HistGradientBoostingClassifier(max_iter=200, learning_rate=0.05, max_depth=3, early_stopping=False,
                                           random_state=0)
    model.fit(both, labels)
    return lambda z: (model.predict_proba(z)[:, 1] + model.predict_proba(-z)[:, 0]) / 2


def cross_validated(fit: Callable[[np.ndarray], Fit], x: np.ndarray, posts: Sequence[str]) -> float:
    """Accuracy over 5 folds of the training side, whole posts in one fold."""
    correct = []
    for inner, outer in GroupKFold(5).split(x, groups=posts):
        correct.extend(fit(x[inner])(x[outer]) > 0.5)
    return float(np.mean(correct))


def pairwise_head(train: Sequence[PreferencePair], test: Sequence[PreferencePair], reward: Path,
                  reward_head: torch.nn.Module, epochs: int = 3) -> np.ndarray:
    """P(chosen ≻ rejected) on `test` from a head over the reward model's towers that reads both
    summaries: g(A, B) − g(B, A), g = the reward model's head on A·post plus an MLP (started at
    zero) on (A·post, B·post, A·B, |A − B|). Trained on `train` pairs, towers fixed."""
    vec = embed(reward, [t for p in [*train, *test] for t in (p.prompt, p.chosen, p.rejected)], 256)
    head = copy.deepcopy(reward_head).float()  # trained here; the reward model keeps its own
    dim = head.in_features
    mlp = torch.nn.Sequential(torch.nn.Linear(4 * dim, 64), torch.nn.GELU(), torch.nn.Linear(64, 1))
    torch.nn.init.zeros_(mlp[2].weight)
    torch.nn.init.zeros_(mlp[2].bias)

    def tensors(pairs: Sequence[PreferencePair]) -> tuple[torch.Tensor, ...]:
        return tuple(torch.tensor(np.array([vec[getattr(p, f)] for p in pairs]))
                     for f in ("prompt", "chosen", "rejected"))

    def logit(post: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        def g(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            return (head(x * post) + mlp(torch.cat([x * post, y * post, x * y, (x - y).abs()], -1)))[:, 0]
        return g(a, b) - g(b, a)

    post, chosen, rejected = tensors(train)
    opt = torch.optim.AdamW([*head.parameters(), *mlp.parameters()], lr=3e-4, weight_decay=0.1)
    torch.manual_seed(0)
    for _ in range(epochs):
        for idx in torch.randperm(len(post)).split(64):
            loss = -torch.nn.functional.logsigmoid(logit(post[idx], chosen[idx], rejected[idx])).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
    with torch.no_grad():
        return torch.sigmoid(logit(*tensors(test))).numpy()


def row(name: str, test: Sequence[PreferencePair], p: np.ndarray, cv: float | None = None) -> dict[str, object]:
    m = pair_metrics(test, p.tolist())
    return {"judge": name, "cross_validated_accuracy": cv, "held_out_accuracy": m["accuracy"],
            "similar_length_accuracy": m["similar_length_accuracy"], "longer_preferred": m["longer_preferred_by_model"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--reward", type=Path, help="a reward model trained on the same training side")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)
    pairs = read_pairs(args.data)
    train, test = split_by_document(pairs, 0.2, seed=0)  # the split of bench/reward_tldr.py's defaults
    encoder = ENCODER.path(Path(os.environ.get("CALIBRA_MODELS_DIR", ROOT / ".calibra" / "models")))
    texts = {t for p in pairs for t in (p.prompt, p.chosen, p.rejected)}
    vec = embed(encoder, [*texts, *{s for p in pairs for s in sentences(p.prompt)}], 256)
    x_train, x_test = differences(train, vec), differences(test, vec)
    posts = [p.key for p in train]
    cos_len = [0, 4]
    rows = [row("cosine with the post + word count, linear", test, fit_linear(x_train[:, cos_len])(x_test[:, cos_len]),
                cross_validated(fit_linear, x_train[:, cos_len], posts))]
    rows.append(row("all features, linear", test, fit_linear(x_train)(x_test),
                    cross_validated(fit_linear, x_train, posts)))
    boosted = fit_boosted(x_train)(x_test)
    rows.append(row("all features, boosted trees", test, boosted, cross_validated(fit_boosted, x_train, posts)))
    if args.reward:
        reward = load_judge("reward", args.reward)
        rm = np.array(judge_probabilities(reward, test))
        rows.append(row("reward model", test, rm))
        rows.append(row("reward model averaged with the boosted trees", test, (rm + boosted) / 2))
        rows.append(row("pairwise head over the reward model's towers", test,
                        pairwise_head(train, test, args.reward, scalar_head(reward.model))))
    out = {"train_pairs": len(train), "test_pairs": len(test), "accuracy_se": math.sqrt(0.25 / len(test)),
           "length_baseline_accuracy": pair_metrics(test, [0.5] * len(test))["length_baseline_accuracy"],
           "rows": rows, "date": datetime.now(UTC).isoformat(timespec="seconds"), "cpus": os.cpu_count()}
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        for r in rows:
            print(f"{r['held_out_accuracy']:.3f}  cv {r['cross_validated_accuracy'] or float('nan'):.3f}  {r['judge']}")


if __name__ == "__main__":
    main()
