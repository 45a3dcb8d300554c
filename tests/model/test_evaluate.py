"""Backend-neutral scoring used by the transformers evaluation and the server benchmark."""

from __future__ import annotations

import math

import pytest

from sglang_pr.model import evaluate as ev
from sglang_pr.model.evaluate import Trace
from sglang_pr.model.task import Problem

P2 = Problem(17, (("*", 6), ("+", 9)))  # answer 11
P3 = Problem(1, (("+", 2), ("+", 3), ("*", 2)))  # answer 12


def test_majority_ignores_unanswered_and_breaks_ties_by_first_seen():
    assert ev.majority([None, 3, 5, 5, None, None]) == 5
    assert ev.majority([7, 3, 3, 7]) == 7
    assert ev.majority([None, None]) is None


def test_score_pass_at_1_majority_and_lengths():
    completions = [
        ["#### 11", "#### 12", "#### 11", "no answer"],  # 2/4 right, majority right
        ["#### 12", "#### 5", "#### 5", "#### 5"],  # 1/4 right, majority wrong
    ]
    lengths = [[10, 20, 30, 40], [50, 60, 70, 80]]
    r = ev.score([P2, P3], completions, lengths)
    assert r["pass_at_1"] == pytest.approx((0.5 + 0.25) / 2)
    assert r["majority_at_n"] == pytest.approx(0.5)
    assert r["mean_trace_tokens"] == pytest.approx(45.0)
    assert r["max_trace_tokens"] == 80 and r["n_questions"] == 2 and r["n_samples"] == 4
    assert r["by_steps"]["2"] == {"n": 1, "pass_at_1": 0.5, "majority": 1.0}
    assert r["by_steps"]["3"]["majority"] == 0.0


def test_lowest_group_confidence_is_the_minimum_window_mean():
    confs = [5.0, 5.0, 1.0, 2.0, 5.0, 5.0]
    assert ev.lowest_group_confidence(confs, 2) == pytest.approx(1.5)
    assert ev.lowest_group_confidence(confs, 1) == pytest.approx(1.0)
    assert ev.lowest_group_confidence([2.0, 4.0], 8) == pytest.approx(3.0)  # shorter than a window


def test_confidence_gap_and_auroc():
    right = Trace("#### 11", [1, 2], confs=[9.0, 9.0])
    wrong = Trace("#### 10", [1, 2], confs=[1.0, 1.0])
    gap = ev.confidence_gap([P2], [[right, wrong, right]], window=2)
    assert gap["mean_correct"] == 9.0 and gap["mean_wrong"] == 1.0 and gap["auroc"] == 1.0
    assert ev._auroc([1.0, 2.0], [1.0, 2.0]) == pytest.approx(0.5)
    assert math.isnan(ev._auroc([1.0], []))


def test_trace_finished_only_with_eos():
    assert Trace("x", [40, 2]).finished
    assert not Trace("x", [40, 41]).finished
    assert not Trace("", []).finished
