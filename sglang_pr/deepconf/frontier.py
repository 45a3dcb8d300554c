"""The accuracy-per-token frontier: self-consistency's curve and DeepConf points against it.

Pure numpy bookkeeping over per-question results (no server); the benchmark
(``benchmarks/deepconf/bench_frontier.py``) feeds it pools of sampled traces and replays.

Definitions used throughout (Q questions, a pool of P independently sampled traces each):

* **SC at N** (:func:`sc_curve`): for each question, ``subsets`` seeded random ordered subsets
  of N distinct pool traces, each majority-voted with the project's one vote
  (:func:`sglang_pr.deepconf.vote.weighted_vote`, plain, in subset order, so its tie rule
  applies to a random order, as in a live group); the question's expected correctness at N is
  the fraction of subsets whose vote is right. SC's tokens at N on a question are N × the mean
  trace length of its pool (the exact expectation over subsets; Monte Carlo would add noise).
  The curve's point at N: accuracy = mean over questions, tokens = mean over questions.
* **SC between measured N** (:meth:`SCCurve.accuracy_at`): piecewise linear in tokens between
  consecutive measured N. Why linear: running N_i on a fraction 1 − λ of questions (picked at
  random) and N_{i+1} on the rest spends, in expectation, exactly the interpolated tokens for
  exactly the interpolated accuracy, so the line is an SC operating point anyone can reach.
  Below the smallest N or above the largest N nothing is measured: ``None``, never an
  extrapolation. Since SC's tokens are N × (pool mean), linear in tokens is linear in N.
* **Pairing** (:func:`paired_ci_vs_sc`): a DeepConf point (per-question hits h_q ∈ [0, 1] and
  tokens t_q) is compared with SC at the *same mean tokens per question* T = mean_q t_q, i.e.
  at N* = T / (mean pool trace length), the one fixed N SC would run on every question for
  that spend. Per question, d_q = h_q − s_q(N*), where s_q(N*) is that question's expected SC
  correctness interpolated in N at N* (same interpolation weights on every question, so
  mean_q d_q is exactly DeepConf's accuracy minus the SC curve at T). Why not match each
  question's own spend t_q: SC is a fixed-N method; giving it DeepConf's per-question
  allocation would compare against an adaptive SC nobody runs, and the point estimate would
  no longer equal the gap to the plotted curve. The interval is a paired percentile bootstrap
  over questions (seeded). SC's side is an expectation over subsets (its sampling noise is
  averaged out), so the interval reflects question sampling and DeepConf's own run noise.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Hashable, Optional, Sequence

import numpy as np

from sglang_pr.deepconf.vote import weighted_vote

SC_NS: tuple[int, ...] = (1, 2, 4, 8, 16, 32, 64)
DEEPCONF_BUDGETS: tuple[int, ...] = (8, 16, 32, 64, 128)


def default_grid(pool: int) -> tuple[list[int], list[int]]:
    """(SC's N, DeepConf budgets) a pool of ``pool`` traces per question covers: the budgets up
    to the pool, and SC at every ``SC_NS`` up to the pool plus the largest budget, so every
    DeepConf point is compared with SC interpolated, never extrapolated (a budget-B run spends
    at most SC-at-B's tokens). SC at N = pool is the whole pool's vote (one subset, in random
    orders for the tie rule): exact for that pool, but without the averaging over subsets that
    smaller N get."""
    budgets = [b for b in DEEPCONF_BUDGETS if b <= pool]
    ns = sorted({n for n in SC_NS if n <= pool} | set(budgets[-1:]))
    return ns, budgets


# The bar for "on or above SC's curve": accuracy >= SC - 0.01, interval's low end >= -0.03.
GOAL_DIFF, GOAL_LOW = -0.01, -0.03


@dataclass(frozen=True)
class QuestionPool:
    """One question's pool: per-trace answer (None: no answer) and generated tokens, the truth."""

    answers: Sequence[Optional[Hashable]]
    tokens: Sequence[int]
    truth: Hashable

    def __post_init__(self):
        if len(self.answers) != len(self.tokens) or not self.answers:
            raise ValueError(f"a pool needs as many answers as token counts, at least one "
                             f"(got {len(self.answers)} and {len(self.tokens)})")


@dataclass(frozen=True)
class SCCurve:
    """Self-consistency measured at ``ns`` on Q questions (see the module docstring)."""

    ns: np.ndarray  # [K] int, increasing
    correct: np.ndarray  # [Q, K] expected correctness of SC at N per question
    trace_tokens: np.ndarray  # [Q] mean generated tokens of one pool trace per question
    makespan: np.ndarray  # [Q, K] mean longest trace in the subset (decode steps at width N)

    @property
    def accuracy(self) -> np.ndarray:  # [K]
        return self.correct.mean(axis=0)

    @property
    def tokens(self) -> np.ndarray:  # [K] mean generated tokens per question
        return self.ns * self.trace_tokens.mean()

    def n_at(self, tokens: float) -> Optional[float]:
        """The (fractional) N at which SC spends ``tokens`` per question; None outside the
        measured range (no extrapolation)."""
        n = tokens / self.trace_tokens.mean()
        lo, hi = float(self.ns[0]), float(self.ns[-1])
        # a hair of tolerance: a spend computed as N × mean must map back onto N itself
        if n < lo * (1 - 1e-12) or n > hi * (1 + 1e-12):
            return None
        return min(max(n, lo), hi)

    def per_question_at(self, tokens: float) -> Optional[np.ndarray]:
        """s_q at the N where SC spends ``tokens`` per question, [Q]; None outside the range."""
        n = self.n_at(tokens)
        if n is None:
            return None
        i = int(np.searchsorted(self.ns, n, side="left"))
        if i < len(self.ns) and self.ns[i] == n or i == 0:
            return self.correct[:, i].copy()
        lam = (n - self.ns[i - 1]) / (self.ns[i] - self.ns[i - 1])
        return (1 - lam) * self.correct[:, i - 1] + lam * self.correct[:, i]

    def accuracy_at(self, tokens: float) -> Optional[float]:
        """SC's accuracy at ``tokens`` per question, piecewise linear between measured N;
        None below the smallest or above the largest measured N."""
        s = self.per_question_at(tokens)
        return None if s is None else float(s.mean())


def _subsets(rng: np.random.Generator, pool_size: int, n: int, count: int) -> np.ndarray:
    """``count`` random ordered subsets of ``n`` distinct indices of ``range(pool_size)``."""
    return rng.random((count, pool_size)).argsort(axis=1)[:, :n]  # [count, n]


def sc_curve(pools: Sequence[QuestionPool], ns: Sequence[int] = SC_NS, subsets: int = 200,
             seed: int = 0) -> SCCurve:
    """SC's curve from per-question pools (module docstring). Seeded per (seed, question, N),
    so a question's numbers do not depend on which other questions are in the run."""
    ns_arr = np.asarray(sorted(set(int(n) for n in ns)), dtype=np.int64)  # [K]
    if not pools or ns_arr.size == 0 or ns_arr[0] < 1:
        raise ValueError("sc_curve needs at least one pool and N >= 1")
    smallest = min(len(p.answers) for p in pools)
    if ns_arr[-1] > smallest:
        raise ValueError(f"N={ns_arr[-1]} exceeds the smallest pool ({smallest} traces)")
    correct = np.zeros((len(pools), ns_arr.size))  # [Q, K]
    makespan = np.zeros((len(pools), ns_arr.size))  # [Q, K]
    for q, pool in enumerate(pools):
        tokens = np.asarray(pool.tokens, dtype=np.float64)  # [P]
        for k, n in enumerate(ns_arr):
            rng = np.random.default_rng((seed, q, int(n)))
            idx = _subsets(rng, len(pool.answers), int(n), subsets)  # [subsets, n]
            votes = [weighted_vote([pool.answers[i] for i in row]).answer for row in idx]
            correct[q, k] = np.mean([v is not None and v == pool.truth for v in votes])
            makespan[q, k] = tokens[idx].max(axis=1).mean()
    trace_tokens = np.array([np.mean(p.tokens) for p in pools], dtype=np.float64)  # [Q]
    return SCCurve(ns_arr, correct, trace_tokens, makespan)


@dataclass(frozen=True)
class PairedDiff:
    diff: float  # DeepConf accuracy − SC's at the same mean tokens per question
    lo: float
    hi: float
    sc_accuracy: float
    sc_n: float  # the fractional N SC runs at that spend


def paired_ci_vs_sc(hits: Sequence[float], tokens: Sequence[float], curve: SCCurve,
                    reps: int = 2000, seed: int = 0) -> Optional[PairedDiff]:
    """Paired 95 % bootstrap interval of (accuracy − SC at the same mean tokens), pairing as in
    the module docstring; None when that spend lies outside SC's measured N (no extrapolation).
    ``hits[q]`` may be a fraction (the mean over several replays of question q)."""
    h = np.asarray(hits, dtype=np.float64)  # [Q]
    t = np.asarray(tokens, dtype=np.float64)  # [Q]
    if h.shape != (curve.correct.shape[0],) or t.shape != h.shape:
        raise ValueError(f"hits and tokens must have one entry per question of the SC curve "
                         f"({curve.correct.shape[0]}), got {h.shape} and {t.shape}")
    total = float(t.mean())
    s = curve.per_question_at(total)
    if s is None:
        return None
    d = h - s  # [Q]
    idx = np.random.default_rng(seed).integers(0, d.size, size=(reps, d.size))  # [reps, Q]
    means = d[idx].mean(axis=1)  # [reps]
    return PairedDiff(float(d.mean()), float(np.quantile(means, 0.025)),
                      float(np.quantile(means, 0.975)), float(s.mean()), float(curve.n_at(total)))


def first_reach(tokens: Sequence[float], accuracy: Sequence[float],
                target: float) -> Optional[float]:
    """Fewest tokens at which a method's curve (its points in token order, joined linearly)
    first reaches ``target``: the first point's tokens if it is already there, else the
    crossing on the first segment that reaches it; None if no point reaches it."""
    order = np.argsort(np.asarray(tokens, dtype=np.float64), kind="stable")
    t = np.asarray(tokens, dtype=np.float64)[order]
    a = np.asarray(accuracy, dtype=np.float64)[order]
    if a.size == 0:
        return None
    if a[0] >= target:
        return float(t[0])
    for i in range(1, a.size):
        if a[i] >= target:
            lam = (target - a[i - 1]) / (a[i] - a[i - 1])
            return float(t[i - 1] + lam * (t[i] - t[i - 1]))
    return None


def tokens_fraction_at_saturation(curve: SCCurve, tokens: Sequence[float],
                                  accuracy: Sequence[float], tol: float = 0.01) -> dict:
    """At SC's saturation accuracy, a method's tokens as a fraction of what SC needs.

    Saturation accuracy A_sat = (SC's best accuracy over its measured N) − ``tol``: the level
    SC's plateau reaches, less the issue's accuracy tolerance (0.01) so that noise at one N
    does not set the bar. SC needs T_SC = :func:`first_reach` of its curve at A_sat; the
    method needs T_M = :func:`first_reach` of its own points (``tokens``, ``accuracy``: one
    per budget) at A_sat. ``fraction`` = T_M / T_SC (the issue's goal: ≤ 0.5), None when the
    method never reaches A_sat.
    """
    target = float(curve.accuracy.max()) - tol
    sc_tokens = first_reach(curve.tokens, curve.accuracy, target)
    m_tokens = first_reach(tokens, accuracy, target)
    return {"saturation_accuracy": target, "tol": tol, "sc_tokens": sc_tokens,
            "method_tokens": m_tokens,
            "fraction": None if m_tokens is None or not sc_tokens else m_tokens / sc_tokens}


@dataclass(frozen=True)
class MethodPoint:
    """One method at one budget on the SC curve's questions (same order)."""

    method: str
    budget: int
    hits: Sequence[float]  # [Q] correctness (or mean over replays) per question
    tokens: Sequence[float]  # [Q] generated tokens per question
    wall_s: Optional[float] = None  # summed over questions
    default: bool = False


def build_frontier(model: str, curve: SCCurve, points: Sequence[MethodPoint],
                   sc_wall_s: Optional[Sequence[float]] = None, reps: int = 2000,
                   seed: int = 0, tol: float = 0.01) -> dict:
    """Issue 13's schema: ``{"points": [{"model", "method", "budget", "default", "accuracy",
    "tokens_per_question", "wall_s", "n_questions", "ci_vs_sc": [lo, hi]}, ...],
    "saturation": {method: tokens_fraction_at_saturation(...)}}``.

    SC points come first (``ci_vs_sc`` None); each other point adds ``diff_vs_sc``,
    ``sc_n_at_tokens`` and ``goal_met`` (diff ≥ −0.01 and the interval's low end ≥ −0.03),
    all None when its spend lies outside SC's measured N. ``sc_wall_s``: [K] SC wall per N.
    """
    q = int(curve.correct.shape[0])
    out = [{"model": model, "method": "sc", "budget": int(n), "default": False,
            "accuracy": float(a), "tokens_per_question": float(t),
            "wall_s": None if sc_wall_s is None else float(sc_wall_s[k]), "n_questions": q,
            "ci_vs_sc": None}
           for k, (n, a, t) in enumerate(zip(curve.ns, curve.accuracy, curve.tokens))]
    by_method: dict[str, list[dict]] = {}
    for p in points:
        ci = paired_ci_vs_sc(p.hits, p.tokens, curve, reps=reps, seed=seed)
        row = {"model": model, "method": p.method, "budget": int(p.budget),
               "default": bool(p.default), "accuracy": float(np.mean(p.hits)),
               "tokens_per_question": float(np.mean(p.tokens)), "wall_s": p.wall_s,
               "n_questions": q, "ci_vs_sc": None if ci is None else [ci.lo, ci.hi],
               "diff_vs_sc": None if ci is None else ci.diff,
               "sc_n_at_tokens": None if ci is None else ci.sc_n,
               "goal_met": None if ci is None else bool(ci.diff >= GOAL_DIFF
                                                        and ci.lo >= GOAL_LOW)}
        out.append(row)
        by_method.setdefault(p.method, []).append(row)
    saturation = {m: tokens_fraction_at_saturation(
        curve, [r["tokens_per_question"] for r in rows], [r["accuracy"] for r in rows], tol)
        for m, rows in by_method.items()}
    return {"points": out, "saturation": saturation}
