"""Scores for sampled answers to a dataset: pass@1, majority@N and how well a trace's
confidence tells right from wrong (AUROC), across all traces and within each question.

Pure functions over extracted answers (strings, None for no answer) and per-trace confidences
(DeepConf's lowest-group confidence, higher = more confident), so benchmarks and tests share
one definition:

* pass@1: the mean over questions of the share of right samples;
* majority@N: the share of questions whose plain majority vote
  (:func:`sglang_pr.deepconf.vote.weighted_vote`, equal weights) is right;
* auroc_across: one AUROC over every trace of every question (easy questions are both more
  often right and more confident, so this mixes question difficulty into the signal);
* auroc_within: the mean, over questions that have both right and wrong traces, of the AUROC
  among that question's traces alone (what DeepConf's per-question filter relies on).
"""

from __future__ import annotations

import math
from typing import Optional, Sequence

from sglang_pr.deepconf.vote import weighted_vote


def auroc(pos: Sequence[float], neg: Sequence[float]) -> float:
    """P(a random positive scores above a random negative), ties count half; NaN if a side
    is empty. Rank form: O((n + m) log(n + m))."""
    if not pos or not neg:
        return float("nan")
    ranked = sorted([(v, 1) for v in pos] + [(v, 0) for v in neg])
    rank_sum, i = 0.0, 0
    while i < len(ranked):  # tied values share the mean of their ranks
        j = i
        while j < len(ranked) and ranked[j][0] == ranked[i][0]:
            j += 1
        rank_sum += sum(label for _, label in ranked[i:j]) * (i + j + 1) / 2
        i = j
    return (rank_sum - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg))


def _split(answers: Sequence[Optional[str]], confs: Sequence[Optional[float]],
           truth: str) -> tuple[list[float], list[float]]:
    """(confidences of right traces, of wrong traces); traces without a confidence skipped."""
    right, wrong = [], []
    for a, c in zip(answers, confs, strict=True):
        if c is not None:
            (right if a == truth else wrong).append(c)
    return right, wrong


def _round(x: float, digits: int = 4) -> Optional[float]:
    return None if math.isnan(x) else round(x, digits)


def score_samples(truths: Sequence[str], answers: Sequence[Sequence[Optional[str]]],
                  confidences: Optional[Sequence[Sequence[Optional[float]]]] = None) -> dict:
    """pass_at_1, majority_at_n, n_questions, samples, and (with ``confidences``, one per
    answer) auroc_across, auroc_within and auroc_within_questions (how many questions had
    both right and wrong traces). An AUROC that cannot be computed is None."""
    if not truths or len(truths) != len(answers):
        raise ValueError("need one list of answers per question, and at least one question")
    p1 = [sum(a == t for a in ans) / len(ans) for t, ans in zip(truths, answers)]
    maj = [float(weighted_vote(list(ans)).answer == t) for t, ans in zip(truths, answers)]
    out = {
        "n_questions": len(truths),
        "samples": len(answers[0]),
        "pass_at_1": round(sum(p1) / len(p1), 4),
        "majority_at_n": round(sum(maj) / len(maj), 4),
    }
    if confidences is None:
        return out
    all_right, all_wrong, within = [], [], []
    for t, ans, confs in zip(truths, answers, confidences, strict=True):
        right, wrong = _split(ans, confs, t)
        all_right += right
        all_wrong += wrong
        if right and wrong:
            within.append(auroc(right, wrong))
    out["auroc_across"] = _round(auroc(all_right, all_wrong))
    out["auroc_within"] = round(sum(within) / len(within), 4) if within else None
    out["auroc_within_questions"] = len(within)
    return out
