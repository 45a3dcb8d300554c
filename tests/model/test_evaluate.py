"""Backend-neutral scoring used by the transformers evaluation and the server benchmark."""

from __future__ import annotations

import math

import pytest

from sglang_pr.data.scoring import auroc
from sglang_pr.model import evaluate as ev
from sglang_pr.model.evaluate import Trace
from sglang_pr.model.task import Problem

P2 = Problem(17, (("*", 6), ("+", 9)))  # answer 11
P3 = Problem(1, (("+", 2), ("+", 3), ("*", 2)))  # answer 12


def test_majority_at_n_is_the_one_vote_with_its_tie_rule():
    # Unanswered traces do not vote; a 2-2 tie goes to the answer that reached 2 first (11 at
    # the third trace, 5 only at the fourth), so majority@n counts this question right.
    tie = ["no answer", "#### 5", "#### 11", "#### 11", "#### 5"]
    assert ev.score([P2], [tie], [[1] * 5])["majority_at_n"] == 1.0
    tie_other_way = ["#### 5", "#### 5", "#### 11", "#### 11"]  # 5 reached 2 first
    assert ev.score([P2], [tie_other_way], [[1] * 4])["majority_at_n"] == 0.0
    assert ev.score([P2], [["no answer"] * 3], [[1] * 3])["majority_at_n"] == 0.0


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


def test_confidence_gap_uses_the_lowest_window_mean():
    # right: windows of 2 over [5, 5, 1, 2, 5, 5] -> means 5, 3, 1.5, 3.5, 5 -> lowest 1.5;
    # wrong: 2 tokens, one window -> its mean 3.0; a trace without tokens has none -> skipped.
    right = Trace("#### 11", [1], confs=[5.0, 5.0, 1.0, 2.0, 5.0, 5.0])
    wrong = Trace("#### 10", [1], confs=[2.0, 4.0])
    empty = Trace("#### 10", [], confs=[])
    gap = ev.confidence_gap([P2], [[right, wrong, empty]], window=2)
    assert gap["mean_correct"] == pytest.approx(1.5) and gap["mean_wrong"] == pytest.approx(3.0)
    assert gap["auroc"] == 0.0  # the right trace is the less confident one
    assert ev.confidence_gap([P2], [[right, Trace("#### 10", [1], [2.0, 4.0])]], window=8)[
        "mean_wrong"] == pytest.approx(3.0)  # 2 tokens < 8: still the mean of all
    one = ev.confidence_gap([P2], [[right]], window=1)
    assert one["mean_correct"] == 1.0 and math.isnan(one["auroc"])  # window 1: the lowest token


def test_confidence_gap_and_auroc():
    right = Trace("#### 11", [1, 2], confs=[9.0, 9.0])
    wrong = Trace("#### 10", [1, 2], confs=[1.0, 1.0])
    gap = ev.confidence_gap([P2], [[right, wrong, right]], window=2)
    assert gap["mean_correct"] == 9.0 and gap["mean_wrong"] == 1.0 and gap["auroc"] == 1.0
    assert auroc([1.0, 2.0], [1.0, 2.0]) == pytest.approx(0.5)
    assert math.isnan(auroc([1.0], []))


def test_trace_finished_only_with_eos():
    assert Trace("x", [40, 2]).finished
    assert not Trace("x", [40, 41]).finished
    assert not Trace("", []).finished


def test_sampler_records_each_sampled_tokens_logprob_and_confidence():
    import torch

    model, _ = ev.load()
    problems = [P2, Problem(5, (("-", 8), ("*", 3)))]
    traces = ev.sample_traces(model, problems, 2, temperature=0.7, max_new_tokens=40, seed=3, progress=False)
    for p, ts in zip(problems, traces):
        for t in ts:
            ids = ev.prompt_ids(p) + t.token_ids
            with torch.inference_mode():
                logp = torch.log_softmax(model(input_ids=torch.tensor([ids])).logits[0].float(), -1)
            n = len(ev.prompt_ids(p))
            want = [logp[n - 1 + i, tok].item() for i, tok in enumerate(t.token_ids)]
            conf = [-logp[n - 1 + i].topk(ev.CONF_TOP_K).values.mean().item() for i in range(len(t.token_ids))]
            assert t.logprobs == pytest.approx(want, abs=1e-4)
            assert t.confs == pytest.approx(conf, abs=1e-3)
