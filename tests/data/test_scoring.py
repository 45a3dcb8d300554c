"""sglang_pr/data/scoring.py: pass@1, majority@N and the AUROCs, on hand-computed cases."""

import math

import pytest

from sglang_pr.data.scoring import auroc, score_samples


def test_auroc_hand_cases():
    assert auroc([3.0, 4.0], [1.0, 2.0]) == 1.0
    assert auroc([1.0, 2.0], [3.0, 4.0]) == 0.0
    assert auroc([2.0], [2.0]) == 0.5  # a tie counts half
    assert auroc([1.0, 3.0], [2.0]) == 0.5
    assert math.isnan(auroc([], [1.0]))


def test_pass_at_1_and_majority():
    truths = ["4", "9"]
    answers = [["4", "4", "5", None], ["8", "8", "9", "9"]]
    s = score_samples(truths, answers)
    assert s == {"n_questions": 2, "samples": 4, "pass_at_1": round((0.5 + 0.5) / 2, 4),
                 "majority_at_n": 0.5}  # q2: 8 and 9 tie, 8 reached the top score first


def test_auroc_within_differs_from_across():
    # Question 1 is easy and confident, question 2 hard and unconfident: across questions
    # confidence looks perfect, within each question it is inverted.
    truths = ["1", "2"]
    answers = [["1", "1", "0"], ["2", "0", "0"]]
    confs = [[9.0, 8.0, 10.0], [1.0, 2.0, 3.0]]
    s = score_samples(truths, answers, confs)
    assert s["auroc_within"] == 0.0
    assert s["auroc_within_questions"] == 2
    # right: 9, 8, 1; wrong: 10, 2, 3 -> pairs right > wrong: 9>2,9>3, 8>2,8>3 = 4 of 9
    assert s["auroc_across"] == round(4 / 9, 4)


def test_questions_without_both_kinds_are_left_out_of_within():
    s = score_samples(["1", "2"], [["1", "1"], ["2", "0"]], [[5.0, 4.0], [3.0, None]])
    assert s["auroc_within"] is None  # q1 all right; q2's wrong trace has no confidence
    assert s["auroc_within_questions"] == 0
    assert s["auroc_across"] is None  # no wrong trace with a confidence


def test_shapes_are_checked():
    with pytest.raises(ValueError):
        score_samples([], [])
    with pytest.raises(ValueError):
        score_samples(["1"], [["1"], ["2"]])
    with pytest.raises(ValueError):
        score_samples(["1"], [["1", "2"]], [[1.0]])
