"""Offline filtering + vote (Python API) against hand-computed expectations."""

import warnings

import numpy as np
import pytest

from sglang_pr.deepconf.offline import Trace, load_traces, method_eta, offline_vote
from sglang_pr.deepconf.summary import summarize
from sglang_pr.model.task import ANSWER_PREFIX


def _trace(ans, conf_level, n=10, finish="stop"):
    return Trace(text=f"work\n{ANSWER_PREFIX}{ans}", confidences=[conf_level] * n, finish_reason=finish)


def test_methods_disagree_as_designed():
    # 6 low-confidence traces say 1, 2 high-confidence say 2, one early-stopped says 3
    traces = [_trace(1, 1.0) for _ in range(6)] + [_trace(2, 5.0) for _ in range(2)]
    traces.append(_trace(3, 9.0, finish="low_confidence"))
    assert offline_vote(traces, "sc").answer == "1"
    assert offline_vote(traces, "weighted").answer == "2"  # 10 > 6
    low = offline_vote(traces, "deepconf_low", window=4)
    assert low.answer == "2" and low.kept[-1] is False and sum(low.kept) == 2
    # including the early-stopped trace changes the top-10 %
    assert offline_vote(traces, "deepconf_low", include_stopped=True).answer == "3"


@pytest.mark.parametrize("kind", ["lowest_group", "bottom10", "tail", "mean"])
def test_filter_uses_the_chosen_confidence(kind):
    rng = np.random.default_rng(7)
    traces = [Trace(text=f"{ANSWER_PREFIX}{i % 3}", confidences=rng.uniform(0, 3, 30).tolist())
              for i in range(20)]
    res = offline_vote(traces, "deepconf", eta=30, confidence=kind, window=8)
    conf = [summarize(t.confidences, 8).get(kind) for t in traces]
    thr = np.percentile(conf, 70)
    assert res.kept == [c >= thr for c in conf]
    scores = {}
    for t, c, k in zip(traces, conf, res.kept):
        if k:
            a = t.text[-1]
            scores[a] = scores.get(a, 0) + c
    assert res.answer == max(scores, key=scores.get)


def test_load_group_response_dict():
    data = {"traces": [
        {"text": f"{ANSWER_PREFIX}4", "confidence": {"lowest_group": 2.0, "bottom10": 2.0, "tail": 2.0,
                                           "mean": 2.0, "n_tokens": 5},
         "finish_reason": {"type": "stop"}, "tokens": 5},
        {"text": f"{ANSWER_PREFIX}5", "confidence": {"lowest_group": 1.0, "bottom10": 1.0, "tail": 1.0,
                                           "mean": 1.0, "n_tokens": 5},
         "finish_reason": "stop", "tokens": 5},
    ]}
    traces = load_traces(data)
    assert traces[0].finish_reason == "stop" and traces[0].tokens == 5
    assert offline_vote(traces, "deepconf_low").answer == "4"


def test_missing_confidences_is_a_clear_error():
    with pytest.raises(ValueError, match="confidences"):
        offline_vote([Trace(text=f"{ANSWER_PREFIX}1")], "weighted")
    assert offline_vote([Trace(text=f"{ANSWER_PREFIX}1")], "sc").answer == "1"


def test_majority_is_a_deprecated_alias_of_sc():
    # 2-2 tie in trace order y, x, x, y: both names must give the one vote's answer (x)
    traces = [Trace(text=f"{ANSWER_PREFIX}{a}") for a in (2, 1, 1, 2)]
    with pytest.deprecated_call(match="'sc'"):
        old = offline_vote(traces, "majority")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the one name warns about nothing
        new = offline_vote(traces, "sc")
    assert old.answer == new.answer == "1" and old.kept == new.kept == [True] * 4
    assert old.vote.scores == new.vote.scores == {"2": 2.0, "1": 2.0}
    with pytest.deprecated_call():
        assert method_eta("majority") is None
    with pytest.raises(ValueError, match="unknown vote method"):
        offline_vote(traces, "plurality")
