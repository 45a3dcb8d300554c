"""Frontier bookkeeping (deepconf/frontier.py) against direct computations on small pools."""

import itertools
import math

import numpy as np
import pytest

from sglang_pr.deepconf.frontier import (
    MethodPoint,
    QuestionPool,
    SCCurve,
    build_frontier,
    default_grid,
    first_reach,
    paired_ci_vs_sc,
    sc_curve,
    tokens_fraction_at_saturation,
)
from sglang_pr.deepconf.vote import weighted_vote


def exact_sc(pool: QuestionPool, n: int) -> tuple[float, float]:
    """(expected correctness, expected longest trace) of SC at N over every ordered subset."""
    hits, longest = [], []
    for idx in itertools.permutations(range(len(pool.answers)), n):
        v = weighted_vote([pool.answers[i] for i in idx]).answer
        hits.append(v == pool.truth)
        longest.append(max(pool.tokens[i] for i in idx))
    return float(np.mean(hits)), float(np.mean(longest))


POOLS = [
    QuestionPool(["1", "2", "1", "2", None], [10, 20, 30, 40, 50], "1"),  # ties decide N=2, 4
    QuestionPool(["3", "3", "4", "5", "3"], [5, 5, 5, 5, 25], "3"),
    QuestionPool(["6", "7", "8", "6", "9"], [12, 14, 16, 18, 20], "9"),
]


def test_sc_curve_matches_the_exact_expectation():
    curve = sc_curve(POOLS, ns=(1, 2, 4), subsets=20000, seed=0)
    for q, pool in enumerate(POOLS):
        for k, n in enumerate((1, 2, 4)):
            hit, longest = exact_sc(pool, n)
            assert curve.correct[q, k] == pytest.approx(hit, abs=0.02)
            assert curve.makespan[q, k] == pytest.approx(longest, rel=0.02)
    means = [np.mean(p.tokens) for p in POOLS]
    assert curve.tokens == pytest.approx(np.array([1, 2, 4]) * np.mean(means))
    assert curve.accuracy == pytest.approx(curve.correct.mean(axis=0))


def test_sc_curve_is_seeded_and_refuses_n_above_the_pool():
    a, b = (sc_curve(POOLS, ns=(2, 4), subsets=50, seed=3) for _ in range(2))
    assert np.array_equal(a.correct, b.correct)
    assert not np.array_equal(a.correct, sc_curve(POOLS, ns=(2, 4), subsets=50, seed=4).correct)
    with pytest.raises(ValueError, match="exceeds the smallest pool"):
        sc_curve(POOLS, ns=(1, 6))


def test_default_grid_covers_what_the_pool_holds_and_never_extrapolates():
    assert default_grid(16) == ([1, 2, 4, 8, 16], [8, 16])
    assert default_grid(64) == ([1, 2, 4, 8, 16, 32, 64], [8, 16, 32, 64])
    # budget 128 needs SC at 128 (the whole pool) so its point is interpolated
    assert default_grid(128) == ([1, 2, 4, 8, 16, 32, 64, 128], [8, 16, 32, 64, 128])
    assert default_grid(100) == ([1, 2, 4, 8, 16, 32, 64], [8, 16, 32, 64])
    ns, budgets = default_grid(4)
    assert ns == [1, 2, 4] and budgets == []


def hand_curve():
    # 2 questions, N = 1, 2, 4; mean trace 10 and 30 tokens -> SC spends 20, 40, 80 per question
    return SCCurve(ns=np.array([1, 2, 4]), correct=np.array([[0.2, 0.4, 1.0], [0.0, 0.6, 0.6]]),
                   trace_tokens=np.array([10.0, 30.0]), makespan=np.ones((2, 3)))


def test_interpolation_is_linear_in_tokens_and_refuses_to_extrapolate():
    c = hand_curve()
    assert c.accuracy_at(20) == pytest.approx(0.1) and c.accuracy_at(80) == pytest.approx(0.8)
    # 30 tokens: halfway from N=1 to N=2 -> per question 0.3 and 0.3
    assert c.per_question_at(30) == pytest.approx([0.3, 0.3])
    # 60 tokens: halfway from N=2 to N=4 -> 0.7 and 0.6
    assert c.accuracy_at(60) == pytest.approx(0.65)
    assert c.n_at(60) == pytest.approx(3.0)
    assert c.accuracy_at(19.9) is None and c.accuracy_at(80.1) is None


def direct_paired(hits, tokens, curve, reps, seed):
    """The pairing written out: SC's N at the mean spend, each question's own curve there."""
    t = float(np.mean(tokens))
    n_star = t / curve.trace_tokens.mean()
    s = [np.interp(n_star, curve.ns, curve.correct[q]) for q in range(len(hits))]
    d = np.asarray(hits, dtype=float) - np.asarray(s)
    idx = np.random.default_rng(seed).integers(0, len(d), size=(reps, len(d)))
    boots = sorted(float(np.mean(d[row])) for row in idx)
    return float(np.mean(d)), np.quantile(boots, 0.025), np.quantile(boots, 0.975), n_star


def test_paired_interval_against_a_direct_computation():
    rng = np.random.default_rng(0)
    q = 40
    curve = SCCurve(ns=np.array([1, 2, 4, 8]), correct=rng.uniform(0, 1, size=(q, 4)),
                    trace_tokens=rng.uniform(20, 60, size=q), makespan=np.ones((q, 4)))
    hits = rng.integers(0, 2, size=q).astype(float)
    tokens = rng.uniform(50, 200, size=q)
    got = paired_ci_vs_sc(hits, tokens, curve, reps=500, seed=7)
    diff, lo, hi, n_star = direct_paired(hits, tokens, curve, 500, 7)
    assert got.diff == pytest.approx(diff) and got.sc_n == pytest.approx(n_star)
    assert got.lo == pytest.approx(lo) and got.hi == pytest.approx(hi)
    # the point estimate is the gap to the plotted curve at the same mean tokens
    assert got.diff == pytest.approx(hits.mean() - curve.accuracy_at(tokens.mean()))
    assert lo <= diff <= hi


def test_paired_interval_is_degenerate_when_every_question_differs_equally():
    c = hand_curve()
    # mean spend 60 -> SC gives 0.7 and 0.6; hits 0.9 and 0.8 -> d = 0.2 on both
    got = paired_ci_vs_sc([0.9, 0.8], [50, 70], c, reps=200, seed=0)
    assert got.diff == pytest.approx(0.2) and got.lo == pytest.approx(0.2) == got.hi


def test_paired_interval_outside_scs_range_is_none_and_shapes_are_checked():
    c = hand_curve()
    assert paired_ci_vs_sc([1, 1], [100, 100], c) is None  # above N=4
    assert paired_ci_vs_sc([1, 1], [10, 10], c) is None  # below N=1
    with pytest.raises(ValueError, match="one entry per question"):
        paired_ci_vs_sc([1, 1, 1], [30, 30, 30], c)


def test_first_reach_and_the_saturation_fraction():
    assert first_reach([10, 20, 40], [0.5, 0.7, 0.9], 0.8) == pytest.approx(30)
    assert first_reach([40, 10, 20], [0.9, 0.5, 0.7], 0.8) == pytest.approx(30)  # any order
    assert first_reach([10, 20], [0.85, 0.9], 0.8) == 10  # already there at the first point
    assert first_reach([10, 20], [0.5, 0.6], 0.8) is None
    c = hand_curve()  # accuracy 0.1, 0.5, 0.8 at 20, 40, 80 tokens
    sat = tokens_fraction_at_saturation(c, [15, 30, 60], [0.3, 0.79, 0.81], tol=0.01)
    assert sat["saturation_accuracy"] == pytest.approx(0.79)
    sc_t = 40 + (0.79 - 0.5) / 0.3 * 40
    assert sat["sc_tokens"] == pytest.approx(sc_t) and sat["method_tokens"] == pytest.approx(30)
    assert sat["fraction"] == pytest.approx(30 / sc_t)
    assert tokens_fraction_at_saturation(c, [15], [0.3])["fraction"] is None


def test_build_frontier_schema():
    c = hand_curve()
    pts = [MethodPoint("deepconf_low", 8, [1.0, 1.0], [50, 70], wall_s=3.0, default=True),
           MethodPoint("deepconf_low", 16, [1.0, 0.0], [200, 200], wall_s=5.0)]
    out = build_frontier("tiny-reasoner", c, pts, sc_wall_s=[1.0, 2.0, 4.0], reps=200)
    keys = {"model", "method", "budget", "default", "accuracy", "tokens_per_question", "wall_s",
            "n_questions", "ci_vs_sc"}
    assert all(keys <= set(p) for p in out["points"])
    sc = [p for p in out["points"] if p["method"] == "sc"]
    assert [p["budget"] for p in sc] == [1, 2, 4] and all(p["ci_vs_sc"] is None for p in sc)
    assert [p["tokens_per_question"] for p in sc] == pytest.approx([20, 40, 80])
    low8, low16 = [p for p in out["points"] if p["method"] == "deepconf_low"]
    ref = paired_ci_vs_sc([1.0, 1.0], [50, 70], c, reps=200)
    assert low8["ci_vs_sc"] == pytest.approx([ref.lo, ref.hi]) and low8["default"]
    assert low8["diff_vs_sc"] == pytest.approx(1.0 - 0.65) and low8["goal_met"]
    assert low16["ci_vs_sc"] is None and low16["goal_met"] is None  # 200 > SC's 80 tokens
    assert low8["n_questions"] == 2 and low8["wall_s"] == 3.0
    assert not math.isnan(out["saturation"]["deepconf_low"]["saturation_accuracy"])
