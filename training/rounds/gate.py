"""Whether a round's new policy replaces the current one: a pure function of the evaluation.

Promote only if the judge the gate reads gives the new policy a win rate of at least
`promote_min_win_rate` over the current one, the summaries grow by at most
`promote_max_length_growth`, and the new policy restates the prompt's layout no more often than
the current one. The gate reads the judge that did not rank the round's samples when there is
one (the ranking judge is what the policy was trained to please), and reports that judge's
held-out accuracy beside its verdict: a win rate from a 0.57-accurate judge is weak evidence.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class GateDecision:
    promote: bool
    reasons: list[str]  # why not, or what passed
    judge: str  # the judge kind whose win rate was read
    win_rate: float | None
    judge_accuracy: float | None  # that judge's held-out accuracy on the newest batch
    length_change: float | None
    repeats_layout: dict[str, float]

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def gate_judge(ranked_by: str, available: list[str]) -> str:
    """The judge the gate reads: another than the one that ranked, where there is one."""
    others = [k for k in available if k != ranked_by]
    return others[0] if others else ranked_by


def decide(summary: dict[str, Any], judge: str | None, judge_accuracy: float | None, *, min_win_rate: float,
           max_length_growth: float, alarms: list[int] | None = None) -> GateDecision:
    """`judge` None (no judge trained yet, as in round 0): ROUGE-L against the human references
    stands in for the win rate; the new policy must not score below the current one. `alarms`:
    rounds with an unacknowledged reward-hacking alarm, each of which blocks promotion."""
    win = summary.get(f"{judge}_new_vs_previous_win_rate") if judge else None
    length = summary.get("length_change")
    layout = summary.get("repeats_layout") or {}
    rouge = summary.get("rouge_l") or {}
    reasons = []
    if judge is None:
        new, old = rouge.get("new"), rouge.get("previous")
        if new is None or old is None:
            reasons.append("no judge and no human references to compare with")
        elif new < old:
            reasons.append(f"ROUGE-L {new:.3f} against the references is below the current policy's {old:.3f}")
    elif win is None:
        reasons.append(f"no win rate from the {judge} judge")
    elif win < min_win_rate:
        reasons.append(f"win rate {win:.3f} over the current policy is below promote_min_win_rate {min_win_rate}")
    if length is not None and length > max_length_growth:
        reasons.append(f"summaries grew by {length:+.1%}, more than promote_max_length_growth {max_length_growth:.0%}")
    if layout.get("new", 0.0) > layout.get("previous", 0.0):
        reasons.append(f"restates the prompt's layout in {layout['new']:.0%} of samples, "
                       f"the current policy in {layout['previous']:.0%}")
    for number in alarms or []:
        reasons.append(f"the reward-hacking alarm of round {number} is not acknowledged "
                       f"(`calibra round acknowledge {number}` or the Training page)")
    promote = not reasons
    if promote:
        evidence = (f"ROUGE-L {rouge['new']:.3f} ≥ {rouge['previous']:.3f} (no judge yet)" if judge is None else
                    f"win rate {win:.3f} ≥ {min_win_rate} ({judge} judge, held-out accuracy "
                    f"{'unknown' if judge_accuracy is None else f'{judge_accuracy:.3f}'})")
        reasons.append(f"{evidence}, length {'n/a' if length is None else f'{length:+.1%}'}, "
                       "layout restatements not up")
    return GateDecision(promote, reasons, judge or "rouge_l", win, judge_accuracy, length, dict(layout))
