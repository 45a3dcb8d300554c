"""The Triton (GPU) path against the torch references.

Without a GPU the same kernels run under Triton's interpreter (``TRITON_INTERPRET=1``, which
must be set before triton is imported, hence a subprocess). On a GPU the ``gpu`` tests run them
compiled, in float32 (IEEE dots) and bfloat16.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch

# (groups, branches, prefix_len, suffix_len, num_heads, num_kv_heads, page_size, ungrouped)
CASES = [
    (1, 4, 37, 9, 8, 2, 1, 1),
    (3, 2, 100, 1, 4, 4, 16, 0),
    (2, 16, 64, 33, 8, 1, 16, 2),  # GQA 8 x 16 branches = 128 rows: two 64-row tiles
    (1, 1, 1, 1, 8, 2, 1, 0),
    (1, 3, 200, 5, 16, 2, 4, 1),  # GQA 8 x 3 branches = 24 rows: one 32-row tile, 8 padded
    (1, 20, 50, 3, 16, 4, 1, 0),  # GQA 4 x 20 branches = 80 rows: a full and a partial tile
]

_SCRIPT = textwrap.dedent(
    """
    import json, sys, torch
    from sglang_pr.kernels import CascadeDecode, merge_state
    from sglang_pr.kernels.reference import flat_decode_ref, merge_state_ref
    from sglang_pr.kernels.testing import make_scenario
    from sglang_pr.kernels.triton_impl import TritonCascade
    errs = []
    for g, n, p, s, hq, hkv, ps, u in json.loads(sys.argv[1]):
        sc = make_scenario(g, n, p, s, hq, hkv, page_size=ps, ungrouped=u, seed=p + s)
        ref = flat_decode_ref(sc.q, sc.k_cache, sc.v_cache, sc.req_slots, sc.scale)
        casc = CascadeDecode(sc.levels(), hkv, hq // hkv, "triton")
        assert isinstance(casc._triton, TritonCascade)
        o, _ = casc.run(sc.q, sc.k_cache, sc.v_cache, sc.scale)
        errs.append((o.double() - ref).abs().max().item())
        # A second layer through the same plan (its split-state stack is reused): new q, K, V.
        q2, k2, v2 = torch.randn_like(sc.q), torch.randn_like(sc.k_cache), sc.v_cache.flip(0)
        o2, _ = casc.run(q2, k2, v2, sc.scale)
        ref2 = flat_decode_ref(q2, k2, v2, sc.req_slots, sc.scale)
        errs.append((o2.double() - ref2).abs().max().item())
    gen = torch.Generator().manual_seed(0)
    va, vb = torch.randn(5, 3, 32, generator=gen), torch.randn(5, 3, 32, generator=gen)
    sa, sb = torch.randn(5, 3, generator=gen) * 9, torch.randn(5, 3, generator=gen) * 9
    sa[0, 0] = float("-inf")
    v, lse = merge_state(va, sa, vb, sb, impl="triton")
    v_r, s_r = merge_state_ref(va, sa, vb, sb)
    merge_err = max((v.double() - v_r).abs().max().item(), (lse.double() - s_r).abs().max().item())
    print(json.dumps({"cascade": errs, "merge": merge_err}))
    """
)


def test_triton_kernels_under_the_interpreter(tmp_path):
    pytest.importorskip("triton")
    env = {**os.environ, "TRITON_INTERPRET": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-P", "-c", _SCRIPT, json.dumps(CASES)],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert len(result["cascade"]) == 2 * len(CASES)  # two layers per plan
    assert max(result["cascade"]) <= 1e-5, result
    assert result["merge"] <= 1e-5, result


@pytest.mark.gpu
@pytest.mark.parametrize("case", CASES + [(4, 64, 2048, 256, 32, 8, 16, 3)])
@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.bfloat16, 2e-2)])
def test_triton_on_gpu_matches_flat_reference(case, dtype, tol):
    from sglang_pr.kernels import CascadeDecode
    from sglang_pr.kernels.reference import flat_decode_ref
    from sglang_pr.kernels.testing import make_scenario

    g, n, p, s, hq, hkv, ps, u = case
    sc = make_scenario(g, n, p, s, hq, hkv, page_size=ps, ungrouped=u, dtype=dtype,
                       device="cuda", seed=p)
    o, _ = CascadeDecode(sc.levels(), hkv, hq // hkv, "triton").run(
        sc.q, sc.k_cache, sc.v_cache, sc.scale)
    ref = flat_decode_ref(sc.q.cpu(), sc.k_cache.cpu(), sc.v_cache.cpu(), sc.req_slots, sc.scale)
    assert (o.double().cpu() - ref).abs().max().item() <= tol


@pytest.mark.gpu
def test_triton_merge_state_on_gpu_matches_torch():
    from sglang_pr.kernels import merge_state

    g = torch.Generator(device="cuda").manual_seed(0)
    va = torch.randn(64, 8, 128, device="cuda", generator=g)
    vb = torch.randn(64, 8, 128, device="cuda", generator=g)
    sa = torch.randn(64, 8, device="cuda", generator=g) * 20
    sb = torch.randn(64, 8, device="cuda", generator=g) * 20
    v_t, s_t = merge_state(va, sa, vb, sb, impl="triton")
    v_c, s_c = merge_state(va, sa, vb, sb, impl="torch")
    assert torch.allclose(v_t, v_c, atol=1e-5) and torch.allclose(s_t, s_c, atol=1e-5)


def test_plan_puts_a_fork_group_in_one_tile():
    """16 branches x GQA 4 = 64 query rows: one tile, so each split reads the prefix once."""
    pytest.importorskip("triton")
    from sglang_pr.kernels.testing import make_scenario
    from sglang_pr.kernels.triton_impl import TritonCascade

    sc = make_scenario(1, 16, 64, 4, num_heads=32, num_kv_heads=8, head_dim=16)
    prefix, suffix = TritonCascade(sc.levels(), 8, 4).launch
    assert prefix[1:3] == (64, 1)  # (block_m, m_tiles)
    assert suffix[1:3] == (16, 1)  # one row x GQA 4, padded to tl.dot's minimum of 16
    big = make_scenario(1, 20, 64, 4, num_heads=32, num_kv_heads=8, head_dim=16)
    assert TritonCascade(big.levels(), 8, 4).launch[0][1:3] == (64, 2)  # 80 rows
    with pytest.raises(ValueError, match="GQA 4"):  # tiles sized for another head layout
        TritonCascade(sc.levels(), 8, 4).run(sc.q[:, :16], sc.k_cache, sc.v_cache, sc.scale)
