"""The float64 references themselves, against torch's scaled_dot_product_attention."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from sglang_pr.kernels.layout import make_worklist
from sglang_pr.kernels.reference import attention_lse_ref, flat_decode_ref


def test_flat_reference_matches_sdpa_with_gqa():
    g = torch.Generator().manual_seed(0)
    k = torch.randn(50, 2, 16, generator=g, dtype=torch.float64)
    v = torch.randn(50, 2, 16, generator=g, dtype=torch.float64)
    q = torch.randn(2, 8, 16, generator=g, dtype=torch.float64)
    slots = [torch.tensor([4, 8, 15, 16, 23, 42]), torch.arange(30)]
    out = flat_decode_ref(q, k, v, slots, 0.2)
    for b, s in enumerate(slots):
        ref = F.scaled_dot_product_attention(
            q[b][:, None], k[s].transpose(0, 1), v[s].transpose(0, 1), scale=0.2, enable_gqa=True
        )[:, 0]
        assert torch.allclose(out[b], ref, atol=1e-12)


def test_lse_reference_is_natural_log_sum_exp():
    g = torch.Generator().manual_seed(1)
    k = torch.randn(10, 1, 4, generator=g, dtype=torch.float64)
    v = torch.randn(10, 1, 4, generator=g, dtype=torch.float64)
    q = torch.randn(1, 1, 4, generator=g, dtype=torch.float64)
    _, lse = attention_lse_ref(q, k, v, make_worklist([[0]], [torch.arange(10)]), 1.0)
    expect = torch.log(torch.exp(k[:, 0] @ q[0, 0]).sum())
    assert torch.allclose(lse[0, 0], expect, atol=1e-12)
