"""CascadeExtend (new tokens only, shared prefix once) against full-sequence causal attention.

The reference (``extend_attention_ref``) queries every position of every request with a causal
mask in float64 and keeps the new rows - what SGLang's torch_native extend computes.
"""

from __future__ import annotations

import pytest
import torch

from sglang_pr.kernels import CascadeExtend, ExtendRequest, make_worklist
from sglang_pr.kernels.reference import extend_attention_ref

TOL = 2e-5  # float32 against float64


def _pool(slots: int, hkv: int, d: int, gen, device="cpu"):
    mk = lambda: torch.randn(slots, hkv, d, generator=gen).to(device)  # noqa: E731
    return mk(), mk()


def _batch(specs, hq=8, hkv=2, d=16, seed=0, device="cpu"):
    """specs: per request ``(group, shared_len, prefix_len, extend_len)``; requests of one group
    share the first ``shared_len`` slots (group None: no sharing). Slots come from a shuffled
    pool, so no item is one consecutive run."""
    gen = torch.Generator().manual_seed(seed)
    free = torch.randperm(8192, generator=gen).tolist()
    take = lambda n: torch.tensor([free.pop() for _ in range(n)], dtype=torch.int64)  # noqa
    shared: dict = {}
    seq_slots = []
    for group, s, p, e in specs:
        head = shared.setdefault(group, take(s)) if group is not None else take(0)
        seq_slots.append(torch.cat([head[:s], take(p + e - s)]).to(device))
    k_cache, v_cache = _pool(8192, hkv, d, gen, device)
    T = sum(e for *_, e in specs)
    q = torch.randn(T, hq, d, generator=gen).to(device)
    return q, k_cache, v_cache, seq_slots


def _plan(specs, seq_slots, share: bool):
    """Shared level: one item per group (all its requests' new rows over the shared slots)."""
    starts, reqs, groups = [0], [], {}
    for (group, s, p, e), slots in zip(specs, seq_slots):
        rows = list(range(starts[-1], starts[-1] + e))
        own = s if share and group is not None else 0
        if own:
            groups.setdefault(group, ([], slots[:s]))[0].extend(rows)
        reqs.append(ExtendRequest(starts[-1], e, p, own, slots))
        starts.append(starts[-1] + e)
    items = list(groups.values())
    level = make_worklist([r for r, _ in items], [sl for _, sl in items],
                          device=seq_slots[0].device)
    return CascadeExtend([level] if items else [], reqs)


def _check(specs, share=True, hq=8, hkv=2, device="cpu", seed=0):
    q, k, v, seq_slots = _batch(specs, hq=hq, hkv=hkv, seed=seed, device=device)
    scale = q.shape[-1] ** -0.5
    out = _plan(specs, seq_slots, share).run(q, k, v, scale)
    ref = extend_attention_ref(q, k, v, seq_slots, [e for *_, e in specs], scale)
    assert out.shape == ref.shape
    err = (out.double().cpu() - ref).abs().max().item()
    assert err <= TOL, err


@pytest.mark.parametrize("hq,hkv", [(8, 2), (4, 4), (9, 3), (8, 1)])
def test_16_branches_one_token_each_over_a_shared_prefix(hq, hkv):
    _check([(0, 300, 300, 1)] * 16, hq=hq, hkv=hkv)


def test_ragged_prefixes_and_extends_with_two_groups_and_loners():
    specs = [
        (0, 200, 200, 1), (0, 200, 237, 1), (0, 200, 205, 9),  # group 0: ragged own prefixes
        (1, 64, 64, 33), (1, 64, 70, 1), (1, 64, 64, 5),  # group 1: multi-token extends
        (None, 0, 150, 12),  # a loner with a cached prefix: SDPA, bottom-right causal mask
        (None, 0, 90, 1),  # a loner decoding-like
        (None, 0, 0, 40),  # prefix 0: a plain prefill (is_causal)
        (None, 0, 0, 1),  # a one-token prompt
    ]
    _check(specs)
    _check(specs, share=False)  # the same batch with no shared level at all


def test_long_causal_own_part_is_chunked_over_queries(monkeypatch):
    import sglang_pr.kernels.extend as ext

    monkeypatch.setattr(ext, "_LOGITS_BUDGET", 8 * 300)  # a few query rows per chunk
    _check([(0, 100, 100, 120), (0, 100, 130, 57)])


def test_plain_prefill_equals_sdpa_causal_bit_for_bit():
    # Prefix 0 makes the same SDPA call as torch_native's extend, so nothing drifts there.
    q, k, v, seq_slots = _batch([(None, 0, 0, 64)])
    out = _plan([(None, 0, 0, 64)], seq_slots, True).run(q, k, v, 0.25)
    sl = seq_slots[0]
    ref = torch.nn.functional.scaled_dot_product_attention(
        q.movedim(0, 1)[None], k[sl].movedim(0, 1)[None], v[sl].movedim(0, 1)[None],
        is_causal=True, scale=0.25, enable_gqa=True)[0].movedim(1, 0)
    assert torch.equal(out, ref)


def test_bad_request_is_refused():
    with pytest.raises(ValueError, match="own_start"):
        ExtendRequest(0, 1, 10, 11, torch.arange(11))
    with pytest.raises(ValueError, match="slots"):
        ExtendRequest(0, 2, 10, 0, torch.arange(11))


@pytest.mark.gpu
def test_extend_on_cuda_matches_reference():
    # The same torch code on CUDA tensors (the backend uses it on every device).
    _check([(0, 500, 500, 1)] * 16 + [(0, 500, 520, 7), (None, 0, 0, 33), (None, 0, 40, 3)],
           device="cuda")
