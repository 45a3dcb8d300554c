"""Exactness grid for the cascade kernels' CPU path (torch) against flat float64 attention."""

from __future__ import annotations

import itertools

import pytest
import torch

from sglang_pr.kernels import (
    CascadeDecode,
    attention_lse,
    grouped_prefix_attention,
    merge_state,
    suffix_attention,
)
from sglang_pr.kernels.reference import attention_lse_ref, flat_decode_ref
from sglang_pr.kernels.testing import make_scenario

TOL = 1e-5  # max abs error in float32 (issue 6)

# (groups, branches, prefix_len, suffix_len): 1 and many groups, singleton "groups", prefixes
# shorter and longer than a page, one-token suffixes.
SHAPES = [
    (1, 1, 1, 1), (1, 4, 37, 9), (1, 16, 256, 1), (3, 4, 1, 64), (3, 16, 100, 33),
    (2, 2, 513, 5),
]
# (num_heads, num_kv_heads): MHA and GQA ratios 4 and 8.
HEADS = [(4, 4), (8, 2), (8, 1)]
PAGES = [1, 16]


@pytest.mark.parametrize(
    "shape,heads,page_size", list(itertools.product(SHAPES, HEADS, PAGES)),
    ids=lambda v: "-".join(map(str, v)) if isinstance(v, tuple) else f"p{v}",
)
def test_cascade_equals_flat_attention(shape, heads, page_size):
    groups, branches, prefix_len, suffix_len = shape
    sc = make_scenario(groups, branches, prefix_len, suffix_len, heads[0], heads[1],
                       page_size=page_size, ungrouped=1, seed=hash((shape, heads, page_size)) % 997)
    ref = flat_decode_ref(sc.q, sc.k_cache, sc.v_cache, sc.req_slots, sc.scale)
    o, lse = CascadeDecode(sc.levels(), heads[1], heads[0] // heads[1], "torch").run(
        sc.q, sc.k_cache, sc.v_cache, sc.scale)
    assert (o.double() - ref).abs().max().item() <= TOL
    # The merged LSE is the LSE over each request's whole KV.
    _, lse_ref = attention_lse_ref(sc.q, sc.k_cache, sc.v_cache, sc.flat(), sc.scale)
    assert (lse.double() - lse_ref).abs().max().item() <= TOL


def test_prefix_and_suffix_entry_points_compose_to_flat():
    sc = make_scenario(groups=2, branches=5, prefix_len=70, suffix_len=6, page_size=4, seed=3)
    o_p, s_p = grouped_prefix_attention(sc.q, sc.k_cache, sc.v_cache, sc.group_rows,
                                        sc.prefix_slots, sc.scale, impl="torch")
    o_s, s_s = suffix_attention(sc.q, sc.k_cache, sc.v_cache, sc.suffix_slots, sc.scale,
                                impl="torch")
    o, _ = merge_state(o_p, s_p, o_s, s_s, impl="torch")
    ref = flat_decode_ref(sc.q, sc.k_cache, sc.v_cache, sc.req_slots, sc.scale)
    assert (o.double() - ref).abs().max().item() <= TOL
    # Each level alone matches the float64 reference of that level, LSE included.
    for (o_l, s_l), work in zip([(o_p, s_p), (o_s, s_s)], sc.levels()):
        o_r, s_r = attention_lse_ref(sc.q, sc.k_cache, sc.v_cache, work, sc.scale)
        assert (o_l.double() - o_r).abs().max().item() <= TOL
        assert torch.equal(torch.isinf(s_l), torch.isinf(s_r))
        fin = ~torch.isinf(s_r)
        assert (s_l.double()[fin] - s_r[fin]).abs().max().item() <= TOL


def test_rows_outside_a_level_are_empty_states():
    sc = make_scenario(groups=1, branches=3, prefix_len=20, suffix_len=2, ungrouped=2, seed=5)
    o, lse = attention_lse(sc.q, sc.k_cache, sc.v_cache, sc.levels()[0], sc.scale, impl="torch")
    outside = [b for b in range(sc.q.shape[0]) if b not in sc.group_rows[0]]
    assert torch.isinf(lse[outside]).all() and (lse[outside] < 0).all()
    assert (o[outside] == 0).all()
    assert torch.isfinite(lse[sc.group_rows[0]]).all()


def test_long_prefix_chunking_is_exact(monkeypatch):
    # Force many chunks along the prefix so the chunk merge path is what is tested.
    import sglang_pr.kernels.torch_impl as ti

    monkeypatch.setattr(ti, "_KV_CHUNK", 64)
    sc = make_scenario(groups=1, branches=8, prefix_len=1000, suffix_len=3, seed=11)
    o, _ = CascadeDecode(sc.levels(), 2, 4, "torch").run(sc.q, sc.k_cache, sc.v_cache, sc.scale)
    ref = flat_decode_ref(sc.q, sc.k_cache, sc.v_cache, sc.req_slots, sc.scale)
    assert (o.double() - ref).abs().max().item() <= TOL


def test_half_precision_inputs_stay_close():
    sc = make_scenario(groups=2, branches=4, prefix_len=64, suffix_len=5, dtype=torch.bfloat16,
                       seed=2)
    o, _ = CascadeDecode(sc.levels(), 2, 4, "torch").run(sc.q, sc.k_cache, sc.v_cache, sc.scale)
    ref = flat_decode_ref(sc.q, sc.k_cache, sc.v_cache, sc.req_slots, sc.scale)
    assert (o.double() - ref).abs().max().item() <= 1e-2  # bf16 inputs, float32 math
