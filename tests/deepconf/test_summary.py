"""Summaries and percentile threshold against direct numpy computations."""

import numpy as np
import pytest

from sglang_pr.deepconf.summary import (
    TraceConfidence,
    group_confidences,
    percentile_threshold,
    summarize,
)


def _direct_groups(c, w):
    if len(c) < w:
        return np.array([np.mean(c)])
    return np.array([np.mean(c[i:i + w]) for i in range(len(c) - w + 1)])


def test_docstring_example():
    s = summarize([3, 1, 2, 4], window=2)
    assert (s.lowest_group, s.bottom10, s.tail, s.mean) == (1.5, 1.5, 3.0, 2.5)


@pytest.mark.parametrize("n,w", [(1, 4), (3, 4), (4, 4), (57, 8), (300, 16)])
def test_against_direct(n, w):
    c = np.random.default_rng(n).uniform(0, 4, size=n)
    g = _direct_groups(c, w)
    np.testing.assert_allclose(group_confidences(c, w), g, rtol=1e-12)
    s = summarize(c, w)
    nb = max(1, int(len(g) * 0.1))
    assert s.lowest_group == pytest.approx(g.min())
    assert s.bottom10 == pytest.approx(np.sort(g)[:nb].mean())
    assert s.tail == pytest.approx(c[-w:].mean())
    assert s.mean == pytest.approx(c.mean())
    assert s.n_tokens == n


def test_empty_trace():
    s = summarize([], 4)
    assert s.lowest_group is None and s.n_tokens == 0
    assert group_confidences([], 4).size == 0


def test_summary_round_trips_through_its_dict_and_non_summaries_give_none():
    s = summarize([3, 1, 2, 4], window=2)
    assert TraceConfidence.from_dict(s.to_dict()) == s
    assert TraceConfidence.from_dict({**s.to_dict(), "n_tokens": None}).n_tokens == 0
    for not_a_summary in (None, [1.0], {"mean": 1.0}):
        assert TraceConfidence.from_dict(not_a_summary) is None


def test_percentile_threshold_direction():
    vals = list(range(1, 101))  # 1..100
    low = percentile_threshold(vals, eta=10)  # keep top 10 %
    assert low == pytest.approx(np.percentile(vals, 90))
    assert sum(v >= low for v in vals) == 10
    high = percentile_threshold(vals, eta=90)
    assert sum(v >= high for v in vals) == 90
    assert percentile_threshold(vals, 100) == 1


@pytest.mark.parametrize("eta", [0, -1, 100.5])
def test_percentile_bad_eta(eta):
    with pytest.raises(ValueError, match="eta"):
        percentile_threshold([1.0, 2.0], eta)


def test_floored_threshold_lowers_the_percentile_to_the_mth_voter_only():
    from sglang_pr.deepconf.summary import floored_threshold

    confs = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0]
    top10 = percentile_threshold(confs, 10.0)  # 9.1: one trace kept
    assert floored_threshold(confs, 10.0, confs, 0) == top10  # no floor
    assert floored_threshold(confs, 10.0, confs, 3) == 8.0  # the 3rd most confident
    assert floored_threshold(confs, 90.0, confs, 3) == percentile_threshold(confs, 90.0)  # met
    # only traces that could vote count; fewer than the floor: all of them clear it
    assert floored_threshold(confs, 10.0, [2.0, 9.5], 3) == 2.0
    assert floored_threshold(confs, 10.0, [], 3) == top10
