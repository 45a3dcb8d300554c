"""verify_tree on a mixed batch: per-request greedy/typical choice and the packed layout."""

from types import SimpleNamespace

import torch

from sglang_pr.medusa.config import MedusaConfig
from sglang_pr.medusa.tree import MedusaTree
from sglang_pr.medusa.verify import verify_tree

torch.set_num_threads(1)
TREE = MedusaTree.from_paths([(0,), (1,), (0, 0)], top_k=10)


def info(top_ks, temps):
    n = len(top_ks)
    return SimpleNamespace(
        top_ks=torch.tensor(top_ks), temperatures=torch.tensor(temps).view(-1, 1),
        top_ps=torch.ones(n), min_ps=torch.zeros(n), acc_additive_penalties=None,
        acc_scaling_penalties=None, logit_bias=None,
    )


def peaked(argmax_rows, vocab=12):
    out = torch.full((len(argmax_rows), 4, vocab), -20.0)
    for b, row in enumerate(argmax_rows):
        for i, a in enumerate(row):
            out[b, i, a] = 20.0
    return out


def test_docstring_example_layout():
    tokens = torch.tensor([[3, 8, 7, 5]])
    vr = verify_tree(TREE, tokens, peaked([[7, 5, 9, 4]]), info([1], [1.0]), MedusaConfig())
    assert vr.accept_nodes.tolist() == [[0, 2, -1]]
    assert vr.accept_tokens.tolist() == [[7, 9, 0]]
    assert vr.predict_flat[0].item() == 7 and vr.predict_flat[2].item() == 9
    assert vr.accept_index_flat.tolist() == [[0, 2, -1]]
    assert vr.last_node.tolist() == [2] and vr.num_drafts.tolist() == [1]


def test_mixed_batch_rows_are_independent():
    tokens = torch.tensor([[3, 7, 1, 5], [3, 7, 1, 5]])
    logits = peaked([[7, 5, 9, 4], [7, 5, 9, 4]])
    g = torch.Generator().manual_seed(0)
    vr = verify_tree(TREE, tokens, logits, info([1, 50], [1.0, 1.0]), MedusaConfig(), g)
    # greedy row: nodes 0 -> 1 -> 3, bonus argmax[3] = 4; the sampled row sees a near one-hot
    # distribution, so typical acceptance takes the same path and the bonus is 4 too.
    assert vr.accept_nodes.tolist() == [[0, 1, 3], [0, 1, 3]]
    assert vr.accept_tokens.tolist() == [[7, 5, 4], [7, 5, 4]]
    assert vr.accept_index_flat.tolist() == [[0, 1, 3], [4, 5, 7]]


def test_logit_bias_applies_to_every_tree_row():
    tokens = torch.tensor([[3, 7, 1, 5]])
    logits = peaked([[7, 5, 9, 4]])
    bias = torch.zeros(1, 12)
    bias[0, 11] = 100.0  # token 11 becomes everyone's argmax: no draft accepted, bonus 11
    si = info([1], [1.0])
    si.logit_bias = bias
    vr = verify_tree(TREE, tokens, logits, si, MedusaConfig())
    assert vr.num_drafts.tolist() == [0] and vr.accept_tokens.tolist() == [[11, 0, 0]]


def test_penalties_and_bias_reach_each_requests_own_rows():
    from sglang_pr.medusa.verify import apply_sampling_adjustments

    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 4, 12, generator=g)  # [bs, n, V]
    si = info([1, 1], [1.0, 1.0])
    si.acc_additive_penalties = torch.randn(2, 12, generator=g)
    si.acc_scaling_penalties = 1 + torch.rand(2, 12, generator=g)
    si.logit_bias = torch.randn(2, 12, generator=g)
    want = logits.clone()
    for b in range(2):  # per request, per tree row: add, scale, bias (SGLang's order)
        x = want[b] + si.acc_additive_penalties[b]
        s = si.acc_scaling_penalties[b]
        want[b] = torch.where(x < 0, x * s, x / s) + si.logit_bias[b]
    apply_sampling_adjustments(logits, si, 4)
    torch.testing.assert_close(logits, want)


def test_seeded_bonus_token_is_reproducible():
    # Flat logits: the bonus is a real draw; with a sampling_seed it is the same draw each time.
    tokens = torch.tensor([[3, 7, 1, 5]]).repeat(64, 1)
    logits = torch.zeros(64, 4, 12)
    si = info([50] * 64, [1.0] * 64)
    si.sampling_seed = torch.arange(64)
    seq_lens = torch.full((64,), 10)
    runs = [verify_tree(TREE, tokens, logits.clone(), si, MedusaConfig(), seq_lens=seq_lens)
            for _ in range(2)]
    assert torch.equal(runs[0].accept_tokens, runs[1].accept_tokens)
    assert len(set(runs[0].accept_tokens[:, -1].tolist() + runs[0].accept_tokens[:, 0].tolist())) > 2
