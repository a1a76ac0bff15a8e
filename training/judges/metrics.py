"""How well a judge orders held-out preference pairs, and whether it only learned length.

Every figure takes P(chosen ≻ rejected) per pair. Beside accuracy: the length baseline (pick
the longer summary) on the same pairs, accuracy on pairs of similar length (where length cannot
decide), accuracy per margin bucket, and calibration (stated confidence against accuracy).
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from annotate.export import SIMILAR_LENGTH, words
from training.judges.pairs import PreferencePair


def _accuracy(correct: np.ndarray) -> float | None:
    return float(correct.mean()) if len(correct) else None


def pair_metrics(pairs: Sequence[PreferencePair], p_chosen: Sequence[float], *, bins: int = 5) -> dict[str, Any]:
    p = np.asarray(p_chosen, dtype=float)
    correct = p > 0.5
    chosen_words = np.array([words(x.chosen) for x in pairs])
    rejected_words = np.array([words(x.rejected) for x in pairs])
    differ = chosen_words != rejected_words
    similar = np.abs(chosen_words - rejected_words) <= SIMILAR_LENGTH * np.maximum(chosen_words, rejected_words)
    margins = np.array([x.margin for x in pairs])
    by_margin = {}
    for value in sorted(set(margins.round(3).tolist())):
        picked = margins.round(3) == value
        by_margin[str(value)] = {"pairs": int(picked.sum()), "accuracy": _accuracy(correct[picked])}
    confidence = np.maximum(p, 1 - p)
    edges = np.linspace(0.5, 1.0, bins + 1)
    calibration = []
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        inside = (confidence >= lo) & ((confidence < hi) | (hi == 1.0))
        if inside.any():
            calibration.append({"confidence": [round(float(lo), 2), round(float(hi), 2)], "pairs": int(inside.sum()),
                                "mean_confidence": float(confidence[inside].mean()),
                                "accuracy": _accuracy(correct[inside])})
    return {
        "pairs": len(pairs),
        "accuracy": _accuracy(correct),
        "length_baseline_accuracy": _accuracy((chosen_words > rejected_words)[differ]),
        "length_baseline_pairs": int(differ.sum()),
        "similar_length_pairs": int(similar.sum()),
        "similar_length_accuracy": _accuracy(correct[similar]),
        "longer_preferred_by_model": _accuracy(((p > 0.5) == (chosen_words > rejected_words))[differ]),
        "accuracy_by_margin": by_margin,
        "calibration": calibration,
    }
