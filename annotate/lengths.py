"""Summary length, the one thing a judge or a rater can prefer without reading: word counts and
the similar-length rule (within 20% of the longer one) behind every length-controlled figure."""
from __future__ import annotations

SIMILAR_LENGTH = 0.2  # word counts within 20% of the longer summary


def words(text: str) -> int:
    return len(text.split())


def similar_length(a_words: float, b_words: float) -> bool:
    """Whether two word counts are close enough that length cannot decide between them."""
    return abs(a_words - b_words) <= SIMILAR_LENGTH * max(a_words, b_words)
