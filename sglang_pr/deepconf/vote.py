"""Votes and filters: plain majority, confidence-weighted vote, top-η % filter, consensus share.

Weighted vote: V(a) = Σ_t w_t · 1[answer_t = a]; plain majority is w_t = 1. Traces without an
answer do not vote. Ties go to the answer that reached the tied score first (trace order), so a
vote is deterministic.

Confidence weights must be positive for the share V(â)/Σ V to mean anything; token confidences
are −mean log-probs, hence ≥ 0 (zero only for a one-hot distribution), so this holds.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Sequence

from sglang_pr.deepconf.summary import percentile_threshold


@dataclass(frozen=True)
class VoteResult:
    answer: Optional[str]
    scores: dict[str, float] = field(default_factory=dict)  # answer -> V(a)
    n_votes: int = 0

    @property
    def share(self) -> float:
        """V(â) / Σ_a V(a): the leading answer's share (0 when nobody voted)."""
        total = sum(self.scores.values())
        return self.scores[self.answer] / total if self.answer is not None and total > 0 else 0.0

    def to_dict(self) -> dict:
        return {"answer": self.answer, "scores": dict(self.scores), "share": self.share,
                "n_votes": self.n_votes}


def weighted_vote(answers: Sequence[Optional[str]],
                  weights: Optional[Sequence[float]] = None) -> VoteResult:
    """Σ weights per answer (all 1 when ``weights`` is None); None answers are skipped."""
    if weights is not None and len(weights) != len(answers):
        raise ValueError(f"{len(answers)} answers but {len(weights)} weights")
    scores: dict[str, float] = {}
    best, best_score, n = None, float("-inf"), 0
    for i, ans in enumerate(answers):
        if ans is None:
            continue
        w = 1.0 if weights is None else float(weights[i])
        scores[ans] = scores.get(ans, 0.0) + w
        n += 1
        if scores[ans] > best_score:  # strict: the first to reach a tied score keeps the lead
            best, best_score = ans, scores[ans]
    return VoteResult(best, scores, n)


def majority_vote(answers: Sequence[Optional[str]]) -> VoteResult:
    return weighted_vote(answers, None)


def keep_top(confidences: Sequence[Optional[float]], eta: float) -> list[bool]:
    """Mask of traces whose confidence is ≥ the (100 − η)-th percentile (top-η % kept).

    Traces without a confidence (no tokens) are never kept. η = 100 keeps every trace that has one.
    """
    present = [c for c in confidences if c is not None]
    if not present:
        return [False] * len(confidences)
    s = percentile_threshold(present, eta)
    return [c is not None and c >= s for c in confidences]
