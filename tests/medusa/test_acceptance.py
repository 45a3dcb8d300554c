"""Greedy and typical acceptance as pure functions, against hand-worked cases."""

import math

import pytest
import torch

from sglang_pr.medusa.acceptance import (
    accepted_node_indices,
    greedy_node_accept,
    sample_rows,
    select_longest_path,
    typical_node_accept,
)
from sglang_pr.medusa.tree import MedusaTree

torch.set_num_threads(1)
TREE = MedusaTree.from_paths([(0,), (1,), (0, 0)], top_k=10)  # nodes: root, (0,), (1,), (0,0)


def one_hot_logits(argmax_per_node, vocab=12):
    logits = torch.full((1, len(argmax_per_node), vocab), -5.0)
    for i, a in enumerate(argmax_per_node):
        logits[0, i, a] = 5.0
    return logits


def test_greedy_worked_example_from_docstring():
    tokens = torch.tensor([[3, 8, 7, 5]])
    accept, argmax = greedy_node_accept(tokens, one_hot_logits([7, 5, 9, 4]), TREE.parent)
    assert accept.tolist() == [[True, False, True, True]]
    best, m = select_longest_path(accept, TREE.retrieve_indices)
    assert best.tolist() == [0] and m.tolist() == [1]
    nodes = accepted_node_indices(TREE.retrieve_indices, best, m)
    assert nodes.tolist() == [[0, 2, -1]]
    assert argmax[0, nodes[0, 1]].item() == 9  # the bonus token


def test_greedy_full_chain_and_nothing_accepted():
    tokens = torch.tensor([[3, 7, 1, 5], [3, 1, 2, 5]])
    logits = torch.cat([one_hot_logits([7, 5, 9, 4]), one_hot_logits([7, 5, 9, 4])])
    accept, _ = greedy_node_accept(tokens, logits, TREE.parent)
    best, m = select_longest_path(accept, TREE.retrieve_indices)
    # request 0: node 1 (7 == argmax[root]) then node 3 (5 == argmax[node 1]) -> 2 drafts
    assert best.tolist()[0] == 1 and m.tolist()[0] == 2
    assert accepted_node_indices(TREE.retrieve_indices, best, m)[0].tolist() == [0, 1, 3]
    # request 1: neither depth-1 candidate is 7 -> 0 drafts, only the root
    assert m.tolist()[1] == 0
    assert accepted_node_indices(TREE.retrieve_indices, best, m)[1].tolist() == [0, -1, -1]


def test_typical_threshold_hand_worked():
    # Node rows: root row has p = [0.7, 0.2, 0.1] over tokens 0..2 (temperature 1).
    p = torch.tensor([0.7, 0.2, 0.1])
    row = p.log()
    logits = row.expand(1, 4, 3).clone()
    h = -(p * p.log()).sum().item()  # entropy in nats: 0.8018
    thr = min(0.09, 0.3 * math.exp(-h))  # = min(0.09, 0.1344) = 0.09
    assert thr == pytest.approx(0.09)
    tokens = torch.tensor([[0, 2, 1, 0]])  # node1 token 2 (p 0.1 > 0.09: yes), node2 token 1
    accept, logp = typical_node_accept(tokens, logits, TREE.parent, torch.tensor([1.0]), 0.09, 0.3)
    assert accept.tolist() == [[True, True, True, True]]
    assert logp[0, 1].item() == pytest.approx(math.log(0.1), rel=1e-5)
    # delta branch: a flat distribution has high entropy -> threshold 0.3 * exp(-H) < ε
    flat = torch.zeros(1, 4, 3)  # p = 1/3 each, H = ln 3, 0.3 * exp(-H) = 0.1
    accept2, _ = typical_node_accept(tokens, flat, TREE.parent, torch.tensor([1.0]), 0.5, 0.3)
    assert accept2.tolist() == [[True, True, True, True]]  # 1/3 > min(0.5, 0.1)
    accept3, _ = typical_node_accept(tokens, flat, TREE.parent, torch.tensor([1.0]), 0.5, 1.2)
    assert accept3.tolist() == [[True, False, False, False]]  # 1/3 < min(0.5, 0.4)


def test_typical_temperature_sharpens():
    p = torch.tensor([0.6, 0.3, 0.1])
    logits = p.log().expand(1, 4, 3).clone()
    tokens = torch.tensor([[0, 2, 2, 0]])
    hot, _ = typical_node_accept(tokens, logits, TREE.parent, torch.tensor([1.0]), 0.09, 0.3)
    cold, _ = typical_node_accept(tokens, logits, TREE.parent, torch.tensor([0.3]), 0.09, 0.3)
    assert hot[0, 1] and not cold[0, 1]  # 0.1 survives at T = 1, not once sharpened


def test_tie_break_by_score():
    tree = MedusaTree.from_paths([(0,), (1,)], top_k=2)  # two paths of one draft each
    accept = torch.tensor([[True, True, True]])
    best, m = select_longest_path(accept, tree.retrieve_indices)
    assert best.tolist() == [0] and m.tolist() == [1]
    score = torch.tensor([[0.0, -2.0, -0.5]])
    best, m = select_longest_path(accept, tree.retrieve_indices, score)
    assert best.tolist() == [1] and m.tolist() == [1]


def test_sample_rows_respects_top_k_and_greedy_limit():
    logits = torch.tensor([[0.0, 3.0, 1.0, 2.0]]).repeat(200, 1)
    g = torch.Generator().manual_seed(0)
    out = sample_rows(logits, torch.ones(200), torch.ones(200), torch.full((200,), 2),
                      torch.zeros(200), g)
    assert set(out.tolist()) <= {1, 3} and len(set(out.tolist())) == 2
    out = sample_rows(logits, torch.ones(200), torch.full((200,), 0.01), torch.full((200,), 4),
                      torch.zeros(200), g)
    assert set(out.tolist()) == {1}  # top-p that small keeps only the best token


def test_seeded_sample_rows_reproduce_per_seed_and_position():
    logits = torch.tensor([[0.0, 3.0, 1.0, 2.5]]).repeat(200, 1)
    args = (logits, torch.ones(200), torch.ones(200), torch.full((200,), 2), torch.zeros(200))
    seeds, pos = torch.full((200,), 7), torch.arange(200)
    a = sample_rows(*args, seeds=seeds, positions=pos)
    b = sample_rows(*args, seeds=seeds, positions=pos)
    assert torch.equal(a, b)  # same seed and positions: same tokens, whatever the global RNG
    assert set(a.tolist()) == {1, 3}  # top-k 2 still holds, and positions vary the draw
    c = sample_rows(*args, seeds=torch.full((200,), 8), positions=pos)
    assert not torch.equal(a, c)

