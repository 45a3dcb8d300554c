"""The carried head candidates stay row-aligned as requests leave and join."""

import torch

from sglang_pr.medusa.spec_input import MedusaSpecInput


def test_filter_and_merge():
    a = MedusaSpecInput.carry(torch.arange(3).view(3, 1, 1).expand(3, 2, 4).clone(), 8)
    a.filter_batch(torch.tensor([2, 0]))
    assert a.head_topk[:, 0, 0].tolist() == [2, 0]
    b = MedusaSpecInput.carry(torch.full((1, 2, 4), 9), 8)
    a.merge_batch(b)
    assert a.head_topk[:, 0, 0].tolist() == [2, 0, 9]
    assert a.num_tokens_per_req == 8 and a.is_verify_input()


def test_gpu_custom_mask_layout():
    tree_mask = torch.tensor([[1, 0], [1, 1]], dtype=torch.bool)
    v = MedusaSpecInput(draft_token_num=2, draft_token=torch.zeros(4, dtype=torch.long),
                        tree_mask=tree_mask)
    m = v.build_gpu_custom_mask([1, 3])
    # request 0: rows [1 | 1 0], [1 | 1 1]; request 1: rows [1 1 1 | 1 0], [1 1 1 | 1 1]
    assert m.int().tolist() == [1, 1, 0, 1, 1, 1] + [1, 1, 1, 1, 0, 1, 1, 1, 1, 1]


def _mask_per_request(tree_mask, prefixes):
    """The layout written out request by request (the reference for the batched build)."""
    n = tree_mask.shape[0]
    return torch.cat([torch.cat([torch.ones(n, p, dtype=torch.bool), tree_mask], 1).flatten()
                      for p in prefixes])


def test_gpu_custom_mask_matches_per_request_layout_on_a_real_tree():
    from sglang_pr.medusa.config import MedusaConfig
    from sglang_pr.medusa.tree import MedusaTree

    cfg = MedusaConfig()
    tree = MedusaTree.from_paths(cfg.effective_tree, cfg.top_k)
    n = tree.num_nodes
    v = MedusaSpecInput(draft_token_num=n, draft_token=torch.zeros(3 * n, dtype=torch.long),
                        tree_mask=tree.mask)
    prefixes = [1, 57, 0, 300]
    assert torch.equal(v.build_gpu_custom_mask(prefixes), _mask_per_request(tree.mask, prefixes))
    assert v.build_gpu_custom_mask([]).numel() == 0
