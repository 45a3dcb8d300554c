"""Weighted / plain vote, consensus share and the top-eta filter."""

import numpy as np
import pytest

from sglang_pr.deepconf.vote import keep_top, majority_vote, weighted_vote


def test_majority_and_none_answers():
    r = majority_vote(["3", None, "5", "3"])
    assert r.answer == "3" and r.scores == {"3": 2.0, "5": 1.0} and r.n_votes == 3
    assert r.share == pytest.approx(2 / 3)


def test_weights_can_overturn_majority():
    answers = ["a", "a", "b"]
    assert majority_vote(answers).answer == "a"
    r = weighted_vote(answers, [1.0, 1.0, 5.0])
    assert r.answer == "b" and r.share == pytest.approx(5 / 7)


def test_tie_goes_to_first():
    assert weighted_vote(["x", "y"], [2.0, 2.0]).answer == "x"
    assert majority_vote(["y", "x", "x", "y"]).answer == "x"


def test_empty():
    r = majority_vote([None, None])
    assert r.answer is None and r.share == 0.0


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
