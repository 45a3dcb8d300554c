"""Online window bookkeeping, including a partially filled window and multi-token updates."""

import math

import numpy as np
import pytest
import torch

from sglang_pr.deepconf.summary import group_confidences
from sglang_pr.deepconf.tracker import ConfidenceTracker


def test_docstring_example():
    t = ConfidenceTracker(window=3, threshold=1.0)
    assert t.update([2.0]) is None and t.current_group == 2.0 and not t.window_full
    assert t.update([2.0]) is None and t.lowest_group == math.inf  # window not full yet
    assert t.update([0.5]) is None and t.lowest_group == pytest.approx(1.5)
    assert t.update([0.2]) == 0
    assert t.stopped and t.stop_confidence == pytest.approx(0.9)


def test_partial_window_never_stops_even_below_threshold():
    t = ConfidenceTracker(window=5, threshold=10.0)
    assert t.update([0.1, 0.1, 0.1, 0.1]) is None
    assert not t.stopped
    assert t.update([0.1]) == 0  # the 5th token fills the window


def test_multi_token_update_reports_the_stop_index():
    t = ConfidenceTracker(window=2, threshold=1.0)
    # groups: (3,3)=3, (3,0.5)=1.75, (0.5,0.2)=0.35 -> stop at the 4th token (index 3)
    assert t.update(torch.tensor([3.0, 3.0, 0.5, 0.2, 5.0])) == 3
    assert t.n_tokens == 4  # the token after the stop is not consumed


def test_lowest_group_matches_offline_groups():
    rng = np.random.default_rng(1)
    confs = rng.uniform(0.5, 3.0, size=200)
    t = ConfidenceTracker(window=16)
    for i in range(0, 200, 7):  # uneven chunks, like speculative acceptance
        assert t.update(confs[i:i + 7].tolist()) is None
    assert t.lowest_group == pytest.approx(group_confidences(confs, 16).min(), rel=1e-12)
    assert t.current_group == pytest.approx(confs[-16:].mean(), rel=1e-12)


@pytest.mark.parametrize("thr", [None, -math.inf])
def test_no_threshold_never_stops(thr):
    t = ConfidenceTracker(window=1, threshold=thr)
    assert t.update([0.0] * 50) is None and not t.stopped


def test_bad_window():
    with pytest.raises(ValueError, match="window"):
        ConfidenceTracker(window=0)
