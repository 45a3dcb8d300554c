"""benchmarks/model_confidence.py: its question split and its measures on synthetic traces."""

from __future__ import annotations

import pytest

from sglang_pr.data.scoring import auroc
from sglang_pr.model import task
from sglang_pr.model.evaluate import Trace


@pytest.fixture(scope="module")
def bench(benchmark_module):
    return benchmark_module("model_confidence.py", "model_confidence")


def test_reported_questions_are_disjoint_from_the_tuning_questions(bench):
    tuning = {p.prompt for p in task.heldout_set(*bench.TUNING)}
    qs = bench.questions(150)
    assert len(qs) == 150 and len({p.prompt for p in qs}) == 150
    assert not tuning & {p.prompt for p in qs}
    assert all(p.split == "heldout" for p in qs)


def _trace(text, confs, logprobs):
    return Trace(text, list(range(len(confs))), confs=confs, logprobs=logprobs)


def test_measure_matches_a_direct_computation(bench):
    p = task.Problem(17, (("*", 6), ("+", 9)))  # answer 11
    right = "a:17*6=102>2\nb:2+9=11\n#### 11"
    wrong = "a:17*6=102>2\n?ijkl\nb:2+9=12\n#### 12"
    traces = [[
        _trace(right, [9.0] * 4, [-0.1, -0.2, 0.0, 0.0]),
        _trace(right, [8.0] * 4, [-2.0, 0.0, 0.0, 0.0]),
        _trace(wrong, [3.0] * 4, [-1.0, -0.5, 0.0, 0.0]),
        _trace(wrong, [8.5] * 4, [-0.05, 0.0, 0.0, 0.0]),
    ]]
    out = bench.measure(traces, [p])
    assert out["pass_at_1"] == 0.5
    assert out["lowest_group_w16"]["auroc_within"] == auroc([9.0, 8.0], [3.0, 8.5])  # 0.75
    assert out["sampled_loglik"]["auroc_within"] == auroc([-0.3, -2.0], [-1.5, -0.05])  # 0.25
    assert out["doubt_rate"] == {"right": 0.0, "wrong": 1.0}
    assert out["majority_at_4"] in (0.0, 1.0) and "majority_at_8" not in out  # only k <= samples
