"""The one vote (plain and weighted, with its tie rule), consensus share and the top-eta filter."""

import itertools

import numpy as np
import pytest

from sglang_pr.deepconf.vote import keep_top, weighted_vote


def _direct_vote(answers, weights=None):
    """Independent reference: totals per answer, then among the answers with the top total the
    one whose running total reached it at the earliest trace (the documented tie rule)."""
    w = [1.0] * len(answers) if weights is None else list(weights)
    totals = {}
    for a, x in zip(answers, w):
        if a is not None:
            totals[a] = totals.get(a, 0.0) + x
    if not totals:
        return None
    top = max(totals.values())

    def reached_at(answer):
        running = itertools.accumulate(x if a == answer else 0.0 for a, x in zip(answers, w))
        return next(i for i, r in enumerate(running) if r >= top)

    return min((a for a, t in totals.items() if t == top), key=reached_at)


def test_plain_vote_and_none_answers():
    r = weighted_vote(["3", None, "5", "3"])
    assert r.answer == "3" and r.scores == {"3": 2.0, "5": 1.0} and r.n_votes == 3
    assert r.share == pytest.approx(2 / 3)


def test_weights_can_overturn_the_plain_vote():
    answers = ["a", "a", "b"]
    assert weighted_vote(answers).answer == "a"
    r = weighted_vote(answers, [1.0, 1.0, 5.0])
    assert r.answer == "b" and r.share == pytest.approx(5 / 7)


def test_tie_goes_to_the_answer_that_reached_the_top_score_first():
    # y: 1 at trace 0, 2 at trace 3; x: 2 at trace 2 -> x (first seen would say y)
    assert weighted_vote(["y", "x", "x", "y"]).answer == "x"
    # weighted: b reaches 2 at trace 1, a only at trace 2 -> b (first seen would say a)
    assert weighted_vote(["a", "b", "a"], [1.0, 2.0, 1.0]).answer == "b"
    assert weighted_vote(["x", "y"], [2.0, 2.0]).answer == "x"
    assert weighted_vote([None, 7, 3, 3, 7]).answer == 3  # any hashable answer (task ints)


def test_matches_the_direct_computation_on_random_votes():
    rng = np.random.default_rng(11)
    for _ in range(300):
        n = int(rng.integers(1, 9))
        answers = [None if a == 3 else "abc"[a] for a in rng.integers(0, 4, n)]
        weights = None if rng.random() < 0.5 else rng.integers(1, 4, n).astype(float).tolist()
        assert weighted_vote(answers, weights).answer == _direct_vote(answers, weights), \
            (answers, weights)


def test_empty():
    r = weighted_vote([None, None])
    assert r.answer is None and r.share == 0.0 and r.n_votes == 0


def test_mismatched_lengths():
    with pytest.raises(ValueError):
        weighted_vote(["a"], [1.0, 2.0])


def test_keep_top_matches_percentile():
    rng = np.random.default_rng(3)
    conf = rng.uniform(size=40).tolist()
    mask = keep_top(conf, 10)
    thr = np.percentile(conf, 90)
    assert mask == [c >= thr for c in conf]
    assert sum(mask) == 4
    assert all(keep_top(conf, 100))
    assert keep_top([None, 1.0], 100) == [False, True]
