"""Medusa heads: identity start, shapes, reference state-dict naming."""

import pytest
import torch

from sglang_pr.medusa.heads import MedusaHeads

torch.set_num_threads(1)


def test_untrained_heads_predict_like_the_base_lm_head():
    torch.manual_seed(0)
    lm = torch.randn(50, 16)
    heads = MedusaHeads(16, 50, num_heads=3, num_layers=2, base_lm_head=lm)
    h = torch.randn(7, 16)
    out = heads(h)
    assert out.shape == (7, 3, 50)
    for k in range(3):  # W = 0, b = 0 -> residual blocks are the identity
        torch.testing.assert_close(out[:, k], h @ lm.T)


def test_residual_block_is_x_plus_silu_wx():
    heads = MedusaHeads(4, 6, num_heads=1, num_layers=1)
    block = heads.heads[0][0]
    with torch.no_grad():
        block.linear.weight.copy_(torch.eye(4) * 2)
        block.linear.bias.fill_(0.5)
    x = torch.randn(3, 4)
    torch.testing.assert_close(block(x), x + torch.nn.functional.silu(2 * x + 0.5))


def test_state_dict_uses_reference_names():
    heads = MedusaHeads(8, 10, num_heads=2, num_layers=1)
    keys = set(heads.export_state_dict())
    assert keys == {"0.0.linear.weight", "0.0.linear.bias", "0.1.weight",
                    "1.0.linear.weight", "1.0.linear.bias", "1.1.weight"}
    other = MedusaHeads(8, 10, num_heads=2, num_layers=1)
    other.import_state_dict(heads.export_state_dict())
    h = torch.randn(2, 8)
    torch.testing.assert_close(other(h), heads(h))


def test_topk_shape():
    heads = MedusaHeads(8, 10, num_heads=2, base_lm_head=torch.randn(10, 8))
    assert heads.topk(torch.randn(5, 8), 3).shape == (5, 2, 3)


def test_fused_topk_matches_module_forward():
    torch.manual_seed(1)
    heads = MedusaHeads(16, 40, num_heads=4, num_layers=2, base_lm_head=torch.randn(40, 16))
    with torch.no_grad():
        for p in heads.parameters():
            p.add_(torch.randn_like(p) * 0.3)
    h = torch.randn(6, 16)
    want = heads(h).topk(5, dim=-1).indices
    assert torch.equal(heads.fuse().topk(h, 5), want)


def shared_heads(hidden=16, vocab=40, k=3, layers=1, seed=2):
    torch.manual_seed(seed)
    lm = torch.randn(vocab, hidden)
    heads = MedusaHeads(hidden, vocab, k, num_layers=layers, base_lm_head=lm, shared_lm_head=True)
    with torch.no_grad():
        for p in heads.parameters():
            p.add_(torch.randn_like(p) * 0.3)
    return heads, lm


def test_shared_lm_head_is_held_by_reference_never_trained_nor_saved():
    heads, lm = shared_heads()
    assert heads.lm_head.data_ptr() == lm.data_ptr()  # one copy, the base model's
    assert all(p.shape != lm.shape for p in heads.parameters())  # not trainable
    assert set(heads.export_state_dict()) == {f"{k}.0.linear.{w}" for k in range(3)
                                              for w in ("weight", "bias")}
    x = torch.randn(5, 16)
    for k in range(3):  # head k = its residual block, then the base lm_head
        torch.testing.assert_close(heads(x)[:, k], heads.heads[k](x) @ lm.T)


def test_shared_fused_topk_matches_module_forward():
    heads, _ = shared_heads(layers=2)
    h = torch.randn(6, 16)
    want = heads(h).topk(5, dim=-1).indices
    assert torch.equal(heads.fuse().topk(h, 5), want)


def test_draft_vocab_ranks_only_its_tokens_fused_and_not():
    """A draft vocabulary is the full ranking restricted to its ids, with ids (not positions)
    returned; fused (serving) and module paths agree, for shared and own projections."""
    torch.manual_seed(1)
    for heads in (shared_heads(layers=1)[0],
                  MedusaHeads(16, 50, 3, base_lm_head=torch.randn(50, 16))):
        h = torch.randn(6, 16)
        rows = torch.tensor([3, 7, 11, 20, 21, 33, 39])
        full = heads(h)  # [6, K, 50]
        want = rows[full[..., rows].topk(4, dim=-1).indices]  # ranked among rows, as ids
        heads.set_draft_vocab(rows)
        assert torch.equal(heads.topk(h, 4), want)
        assert torch.equal(heads.fuse().topk(h, 4), want)
        assert set(want.flatten().tolist()) <= set(rows.tolist())
        assert torch.equal(heads.set_draft_vocab(None).fuse().topk(h, 4),
                           full.topk(4, dim=-1).indices)


def test_draft_vocab_must_be_distinct_ids_inside_the_vocab():
    heads, _ = shared_heads(layers=1)
    for bad in ([1, 1], [-1, 2], [0, 50], []):
        with pytest.raises(ValueError, match="draft vocabulary"):
            heads.set_draft_vocab(torch.tensor(bad, dtype=torch.int64))


def root_heads(hidden=16, vocab=40, k=3, layers=1, seed=3):
    torch.manual_seed(seed)
    lm, emb = torch.randn(vocab, hidden), torch.randn(vocab, hidden)
    heads = MedusaHeads(hidden, vocab, k, num_layers=layers, base_lm_head=lm,
                        shared_lm_head=True, root_input=True, base_embedding=emb)
    return heads, lm, emb


def test_root_input_starts_as_plain_heads_and_reads_the_root_embedding():
    heads, lm, emb = root_heads()
    plain = MedusaHeads(16, 40, 3, base_lm_head=lm, shared_lm_head=True)
    plain.import_state_dict({k: v for k, v in heads.export_state_dict().items()
                             if not k.startswith("root_proj.")})
    h, root = torch.randn(5, 16), torch.tensor([0, 3, 3, 39, 7])
    torch.testing.assert_close(heads(h, root=root), plain(h))  # P = 0 at start
    with torch.no_grad():
        for p in heads.parameters():
            p.add_(torch.randn_like(p) * 0.3)
    x = h + emb[root] @ heads.root_proj.weight.T  # x = h + P E[root], then the plain heads
    for k in range(3):
        torch.testing.assert_close(heads(h, root=root)[:, k], heads.heads[k](x) @ lm.T)
    assert heads.embedding.data_ptr() == emb.data_ptr()  # by reference, never saved
    assert "root_proj.weight" in heads.export_state_dict()
    assert all(p.shape != emb.shape for p in heads.parameters())


def test_root_input_fused_topk_matches_module_forward_with_draft_vocab():
    heads, _, _ = root_heads(layers=2)
    with torch.no_grad():
        for p in heads.parameters():
            p.add_(torch.randn_like(p) * 0.3)
    h, root = torch.randn(6, 16), torch.tensor([1, 2, 3, 4, 5, 6])
    want = heads(h, root=root).topk(5, dim=-1).indices
    assert torch.equal(heads.topk(h, 5, root), want)
    assert torch.equal(heads.fuse().topk(h, 5, root), want)
    rows = torch.tensor([0, 4, 9, 13, 21, 30, 35, 38])
    want_rows = rows[heads(h, root=root)[..., rows].topk(3, dim=-1).indices]
    assert torch.equal(heads.set_draft_vocab(rows).fuse().topk(h, 3, root), want_rows)


def test_root_input_without_root_or_embedding_is_an_error():
    heads, _, _ = root_heads()
    with pytest.raises(RuntimeError, match="root tokens"):
        heads.topk(torch.randn(2, 16), 3)
    bare = MedusaHeads(16, 40, 2, base_lm_head=torch.randn(40, 16), shared_lm_head=True,
                       root_input=True)
    with pytest.raises(RuntimeError, match="set_embedding"):
        bare(torch.randn(2, 16), root=torch.tensor([1, 2]))
    with pytest.raises(ValueError, match="embedding shape"):
        bare.set_embedding(torch.randn(39, 16))


def chain_heads(k=3, layers=1, seed=4):
    torch.manual_seed(seed)
    lm, emb = torch.randn(40, 16), torch.randn(40, 16)
    heads = MedusaHeads(16, 40, k, num_layers=layers, base_lm_head=lm, shared_lm_head=True,
                        root_input=True, chain_input=True, base_embedding=emb)
    with torch.no_grad():
        for p in heads.parameters():
            p.add_(torch.randn_like(p) * 0.3)
    return heads, lm, emb


def test_chain_input_heads_follow_the_previous_top1_draft_when_serving():
    """Serving = each head fed the previous head's top-1; the same as teacher forcing with
    those drafts as the tokens followed, fused or not, with or without a draft vocabulary."""
    heads, lm, emb = chain_heads(layers=2)
    h, root = torch.randn(6, 16), torch.tensor([1, 2, 3, 4, 5, 39])
    served = heads.topk(h, 4, root)  # [6, 3, 4]
    forced = heads.topk(h, 4, root, prev=served[:, :-1, 0])
    assert torch.equal(served, forced)
    assert torch.equal(heads.fuse().topk(h, 4, root), served)
    x = h + emb[root] @ heads.root_proj.weight.T  # head 2 by hand: x + Q_2 E[head 1's top-1]
    z = x + emb[served[:, 0, 0]] @ heads.chain_proj[0].weight.T
    assert torch.equal(served[:, 1], (heads.heads[1](z) @ lm.T).topk(4, dim=-1).indices)
    rows = torch.tensor([0, 2, 5, 9, 13, 21, 30, 35, 38])
    heads.set_draft_vocab(rows)
    served = heads.topk(h, 3, root)
    assert set(served.flatten().tolist()) <= set(rows.tolist())
    assert torch.equal(heads.fuse().topk(h, 3, root), served)
    assert torch.equal(heads.topk(h, 3, root, prev=served[:, :-1, 0]), served)


def test_chain_input_state_and_errors():
    heads, _, _ = chain_heads(k=3)
    assert {k for k in heads.export_state_dict() if "proj" in k} == {
        "root_proj.weight", "chain_proj.0.weight", "chain_proj.1.weight"}
    fresh = MedusaHeads(16, 40, 3, base_lm_head=torch.randn(40, 16), shared_lm_head=True,
                        chain_input=True, base_embedding=torch.randn(40, 16))
    h = torch.randn(2, 16)
    plain = MedusaHeads(16, 40, 3, base_lm_head=fresh.lm_head, shared_lm_head=True)
    plain.import_state_dict({k: v for k, v in fresh.export_state_dict().items()
                             if not k.startswith("chain_proj.")})
    assert torch.equal(fresh.topk(h, 3), plain.topk(h, 3))  # Q = 0: ignores what it follows
    with pytest.raises(RuntimeError, match="previous tokens"):
        fresh(h)  # training without the teacher tokens
