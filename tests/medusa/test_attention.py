"""The CPU tree-verify attention vs a brute-force per-node reference."""

import torch

from sglang_pr.medusa.attention import build_tree_kv_layout
from sglang_pr.medusa.tree import MedusaTree

torch.set_num_threads(1)


def test_layout_worked_example_from_docstring():
    tree = MedusaTree.from_paths([(0,)], top_k=1)  # root + one child
    req_to_token = torch.zeros(4, 16, dtype=torch.int32)
    req_to_token[2, :5] = torch.tensor([11, 12, 13, 20, 21])
    req_to_token[0, :3] = torch.tensor([31, 40, 41])
    out_cache_loc = torch.tensor([20, 21, 40, 41])
    kv, mask = build_tree_kv_layout(req_to_token, torch.tensor([2, 0]), torch.tensor([3, 1]),
                                    out_cache_loc, tree.mask)
    assert kv.tolist() == [[11, 12, 13, 20, 21], [31, 0, 0, 40, 41]]
    assert mask.int().tolist() == [[[1, 1, 1, 1, 0], [1, 1, 1, 1, 1]],
                                   [[1, 0, 0, 1, 0], [1, 0, 0, 1, 1]]]


def test_masked_sdpa_matches_per_node_attention():
    torch.manual_seed(0)
    tree = MedusaTree.from_paths([(0,), (1,), (0, 0), (0, 1), (1, 0)], top_k=2)
    n, hq, hk, d = tree.num_nodes, 4, 2, 8
    prefix = torch.tensor([5, 2, 9])
    bs = len(prefix)
    slots = 200
    k_cache, v_cache = torch.randn(slots, hk, d), torch.randn(slots, hk, d)
    req_to_token = torch.zeros(bs, 32, dtype=torch.int64)
    perm = torch.randperm(slots - 1)[: bs * 32].view(bs, 32) + 1
    req_to_token[:] = perm
    out_cache_loc = torch.cat([req_to_token[b, prefix[b] : prefix[b] + n] for b in range(bs)])
    kv, mask = build_tree_kv_layout(req_to_token, torch.arange(bs), prefix, out_cache_loc,
                                    tree.mask)
    q = torch.randn(bs, hq, n, d)
    keys, values = k_cache[kv].transpose(1, 2), v_cache[kv].transpose(1, 2)
    got = torch.nn.functional.scaled_dot_product_attention(
        q, keys, values, attn_mask=mask.unsqueeze(1), enable_gqa=True)
    for b in range(bs):
        for i in range(n):
            ancestors = [j for j in range(n) if tree.mask[i, j]]
            idx = list(req_to_token[b, : prefix[b]]) + [req_to_token[b, prefix[b] + j]
                                                        for j in ancestors]
            idx = torch.stack([torch.as_tensor(x) for x in idx])
            for h in range(hq):
                kk, vv = k_cache[idx, h // 2], v_cache[idx, h // 2]
                w = torch.softmax(q[b, h, i] @ kk.T / d**0.5, dim=0)
                torch.testing.assert_close(got[b, h, i], w @ vv, rtol=1e-5, atol=1e-5)
