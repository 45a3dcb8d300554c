"""The one vote (plain or confidence-weighted) and the top-η % filter.

Vote: V(a) = Σ_t w_t · 1[answer_t = a] and the answer is argmax_a V(a). Plain majority
(self-consistency, method ``"sc"``) is w_t = 1 for every trace. Traces without an answer do not
vote.

Tie rule (the only one in the project): among answers with the same top score, the one that
reached that score first, going through the traces in order, wins. Why this rule: it is the
running leader never changing on a tie - an answer leads until another one strictly overtakes
it - so the final answer is the leader an online group (consensus stop) was watching.
Examples: ``["y", "x", "x", "y"]`` gives ``"x"`` (x reaches 2 at the third trace, y only at
the fourth); answers ``["a", "b", "a"]`` with weights ``[1, 2, 1]`` give ``"b"`` (b reaches 2
at the second trace, a at the third).

Confidence weights must be positive for the share V(â)/Σ V to mean anything; token confidences
are −mean log-probs, hence ≥ 0 (zero only for a one-hot distribution), so this holds.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Generic, Hashable, Optional, Sequence, TypeVar

from sglang_pr.deepconf.summary import percentile_threshold

# An answer: a string from the extractors, an int from the shipped task's extract_answer.
A = TypeVar("A", bound=Hashable)


@dataclass(frozen=True)
class VoteResult(Generic[A]):
    answer: Optional[A]
    scores: dict[A, float] = field(default_factory=dict)  # answer -> V(a)
    n_votes: int = 0

    @property
    def share(self) -> float:
        """V(â) / Σ_a V(a): the leading answer's share (0 when nobody voted)."""
        total = sum(self.scores.values())
        return self.scores[self.answer] / total if self.answer is not None and total > 0 else 0.0

    def to_dict(self) -> dict:
        return {"answer": self.answer, "scores": dict(self.scores), "share": self.share,
                "n_votes": self.n_votes}


def weighted_vote(answers: Sequence[Optional[A]],
                  weights: Optional[Sequence[float]] = None) -> VoteResult[A]:
    """The vote: Σ weights per answer (plain majority when ``weights`` is None); None answers
    are skipped; a tie goes to the answer that reached the top score first (module docstring)."""
    if weights is not None and len(weights) != len(answers):
        raise ValueError(f"{len(answers)} answers but {len(weights)} weights")
    scores: dict[A, float] = {}
    best, best_score, n = None, float("-inf"), 0
    for i, ans in enumerate(answers):
        if ans is None:
            continue
        w = 1.0 if weights is None else float(weights[i])
        scores[ans] = scores.get(ans, 0.0) + w
        n += 1
        if scores[ans] > best_score:  # strict: reaching a tied score does not take the lead
            best, best_score = ans, scores[ans]
    return VoteResult(best, scores, n)


def keep_top(confidences: Sequence[Optional[float]], eta: float) -> list[bool]:
    """Mask of traces whose confidence is ≥ the (100 − η)-th percentile (top-η % kept).

    Traces without a confidence (no tokens) are never kept. η = 100 keeps every trace that has one.
    """
    present = [c for c in confidences if c is not None]
    if not present:
        return [False] * len(confidences)
    s = percentile_threshold(present, eta)
    return [c is not None and c >= s for c in confidences]
