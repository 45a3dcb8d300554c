"""The sampling observer: planned rows, per-row k, logits untouched (CPU twin of the GPU path)."""

import pytest
import torch

from sglang_pr.deepconf.confidence import token_confidence
from sglang_pr.deepconf.observer import (
    PLAN_ATTR,
    ConfidenceHostOutput,
    DeepConfObserver,
    RowPlan,
    find_host_output,
)


class Info:
    pass


def _plan(row_ids, ks, n_rows):
    return RowPlan.build([f"req{i}" for i in row_ids], row_ids, ks, n_rows, "cpu")


@pytest.mark.parametrize("row_ids,ks", [([0, 1, 2, 3], [20] * 4), ([1, 3], [5, 5]),
                                        ([0, 2, 3], [3, 20, 7])])
def test_confidences_for_planned_rows_only(row_ids, ks):
    logits = torch.randn(4, 50)
    before = logits.clone()
    info = Info()
    setattr(info, PLAN_ATTR, _plan(row_ids, ks, 4))
    obs = DeepConfObserver()
    assert obs.is_active(info)
    state = obs.before_grammar(logits, info)
    host = obs.after_sample(state, torch.zeros(4)).copy_to_host(lambda t: t.clone())
    got = dict(host.per_request())
    for r, k in zip(row_ids, ks):
        assert got[f"req{r}"] == pytest.approx(token_confidence(logits[r], k).item(), rel=1e-5)
    assert torch.equal(logits, before)  # sampling sees exactly what it would have seen


def test_inactive_without_plan():
    info = Info()
    assert not DeepConfObserver().is_active(info)
    setattr(info, PLAN_ATTR, None)
    assert not DeepConfObserver().is_active(info)


def test_find_host_output_in_composites():
    host = ConfidenceHostOutput(("a",), torch.tensor([1.0]))

    class Composite:
        outputs = (object(), host)

    assert find_host_output(host) is host
    assert find_host_output(Composite()) is host
    assert find_host_output(None) is None and find_host_output(object()) is None


@pytest.mark.gpu
def test_gpu_matches_cpu():
    logits = torch.randn(8, 1000)
    info_c, info_g = Info(), Info()
    setattr(info_c, PLAN_ATTR, RowPlan.build(list(range(8)), list(range(8)), [20] * 8, 8, "cpu"))
    setattr(info_g, PLAN_ATTR, RowPlan.build(list(range(8)), list(range(8)), [20] * 8, 8, "cuda"))
    obs = DeepConfObserver()
    c = obs.before_grammar(logits, info_c)[1]
    g = obs.before_grammar(logits.cuda(), info_g)[1].cpu()
    torch.testing.assert_close(c, g, rtol=1e-4, atol=1e-4)


def test_plan_for_another_batch_size_tracks_nothing():
    info = Info()
    setattr(info, PLAN_ATTR, _plan([0, 1, 2, 3], [20] * 4, 4))
    assert DeepConfObserver().before_grammar(torch.randn(3, 50), info) is None
