"""merge_state / merge_states (CPU path) against the float64 formula; one-row and slice items."""

from __future__ import annotations

import pytest
import torch

from sglang_pr.kernels.layout import make_worklist
from sglang_pr.kernels.reference import attention_lse_ref, merge_state_ref
from sglang_pr.kernels.torch_impl import TorchAttentionLSE, merge_state, merge_states

INF = float("inf")


def _states(n=6, h=4, d=8, seed=0, spread=5.0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, h, d, generator=g), torch.randn(n, h, generator=g) * spread


def test_merge_state_matches_formula_including_empty_sets():
    v_a, s_a = _states(seed=1)
    v_b, s_b = _states(seed=2)
    s_a[0, 0] = -INF  # set I empty for one (row, head): result is state b
    s_b[1, 2] = -INF
    s_a[2, 1] = s_b[2, 1] = -INF  # both empty: defined as (0, -inf)
    v, s = merge_state(v_a, s_a, v_b, s_b)
    v_r, s_r = merge_state_ref(v_a, s_a, v_b, s_b)
    assert torch.allclose(v.double(), v_r, atol=1e-6)
    assert torch.equal(torch.isinf(s), torch.isinf(s_r))
    assert torch.allclose(s.double()[torch.isfinite(s_r)], s_r[torch.isfinite(s_r)], atol=1e-6)
    assert torch.equal(v[0, 0], v_b[0, 0]) or torch.allclose(v[0, 0], v_b[0, 0], atol=1e-7)
    assert (v[2, 1] == 0).all() and s[2, 1] == -INF


def test_merge_state_is_stable_for_large_lse():
    v_a, _ = _states(seed=3)
    v_b, _ = _states(seed=4)
    s_a = torch.full(v_a.shape[:2], 1000.0)  # e^1000 overflows float32 unless the max goes first
    s_b = torch.full(v_a.shape[:2], 999.0)
    v, s = merge_state(v_a, s_a, v_b, s_b)
    assert torch.isfinite(v).all() and torch.isfinite(s).all()
    w = 1 / (1 + torch.exp(torch.tensor(-1.0)))
    assert torch.allclose(v, w * v_a + (1 - w) * v_b, atol=1e-5)
    assert torch.allclose(s, 1000 + torch.log1p(torch.exp(torch.tensor(-1.0))), atol=1e-4)


def test_merge_is_commutative_and_associative():
    (va, sa), (vb, sb), (vc, sc) = (_states(seed=i) for i in (5, 6, 7))
    left = merge_state(*merge_state(va, sa, vb, sb), vc, sc)
    right = merge_state(va, sa, *merge_state(vb, sb, vc, sc))
    swapped = merge_state(vb, sb, va, sa)
    assert torch.allclose(left[0], right[0], atol=1e-6) and torch.allclose(left[1], right[1])
    assert torch.allclose(swapped[0], merge_state(va, sa, vb, sb)[0], atol=1e-7)
    all3 = merge_states(torch.stack([va, vb, vc]), torch.stack([sa, sb, sc]))
    assert torch.allclose(all3[0], left[0], atol=1e-6)
    assert torch.allclose(all3[1], left[1], atol=1e-6)


@pytest.mark.parametrize("lens", [[1, 2, 3, 300, 301, 2000], [5] * 7, [1]])
def test_one_row_items_of_mixed_lengths_are_exact(lens):
    g = torch.Generator().manual_seed(len(lens))
    k = torch.randn(4000, 2, 16, generator=g)
    v = torch.randn(4000, 2, 16, generator=g)
    q = torch.randn(len(lens), 4, 16, generator=g)
    perm = torch.randperm(4000, generator=g)
    starts = [0] + torch.cumsum(torch.tensor(lens), 0).tolist()
    slots = [perm[starts[i] : starts[i + 1]] for i in range(len(lens))]
    work = make_worklist([[i] for i in range(len(lens))], slots)
    o, s = TorchAttentionLSE(work).run(q, k, v, 0.25)
    o_r, s_r = attention_lse_ref(q, k, v, work, 0.25)
    assert (o.double() - o_r).abs().max() <= 1e-5
    assert (s.double() - s_r).abs().max() <= 1e-5


def test_runs_of_consecutive_slots_are_read_as_slices():
    g = torch.Generator().manual_seed(0)
    k = torch.randn(2000, 1, 8, generator=g)
    v = torch.randn(2000, 1, 8, generator=g)
    q = torch.randn(4, 2, 8, generator=g)
    mixed = torch.cat([torch.arange(100, 612), torch.tensor([5, 3, 9]), torch.arange(700, 710)])
    work = make_worklist([[0, 1], [2, 3]], [torch.arange(10, 40), mixed])
    impl = TorchAttentionLSE(work)
    assert impl.chunked[0].chunks(512) == [(10, 40)]  # a view of the pool, no gather
    first, second = impl.chunked[1].chunks(512)
    assert first == (100, 612) and second.tolist() == [5, 3, 9, *range(700, 710)]
    o, s = impl.run(q, k, v, 0.3)
    o_r, s_r = attention_lse_ref(q, k, v, work, 0.3)
    assert (o.double() - o_r).abs().max() <= 1e-6
    assert (s.double() - s_r).abs().max() <= 1e-6


def test_short_one_row_items_are_batched_padded_and_split(monkeypatch):
    """Short suffixes go through the padded batch path; a small slot budget forces several
    batches. Rows 1 and 6 are covered by no item and must stay empty states."""
    import sglang_pr.kernels.torch_impl as ti

    monkeypatch.setattr(ti, "_SHORT_SLOTS", 12)
    g = torch.Generator().manual_seed(3)
    k = torch.randn(500, 2, 16, generator=g)
    v = torch.randn(500, 2, 16, generator=g)
    q = torch.randn(8, 6, 16, generator=g)  # GQA 3
    lens = {0: 5, 2: 1, 3: 4, 4: 5, 5: 2, 7: 3}
    perm = torch.randperm(499, generator=g) + 1  # never slot 0, the padding placeholder
    starts = torch.cumsum(torch.tensor([0, *lens.values()]), 0).tolist()
    slots = [perm[starts[i] : starts[i + 1]] for i in range(len(lens))]
    work = make_worklist([[r] for r in lens], slots)
    impl = TorchAttentionLSE(work)
    assert not impl.chunked and len(impl.short) >= 3
    assert sorted(r for sb in impl.short for r in sb.rows.tolist()) == sorted(lens)
    assert any(sb.pad is not None for sb in impl.short)
    o, s = impl.run(q, k, v, 0.25)
    o_r, s_r = attention_lse_ref(q, k, v, work, 0.25)
    covered = list(lens)
    assert (o[covered].double() - o_r[covered]).abs().max() <= 1e-6
    assert (s[covered].double() - s_r[covered]).abs().max() <= 1e-6
    assert (o[[1, 6]] == 0).all() and torch.isinf(s[[1, 6]]).all()
