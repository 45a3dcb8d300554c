"""Tree construction, mask, positions and retrieve indices vs a brute-force reference."""

import itertools
import random

import pytest
import torch

from sglang_pr.medusa.config import DEFAULT_TREE
from sglang_pr.medusa.tree import MedusaTree, build_sparse_tree, expected_accept_length

torch.set_num_threads(1)


def brute_force(paths, top_k):
    """Everything recomputed from the path tuples alone, no shared code with tree.py."""
    nodes = [()] + sorted(set(map(tuple, paths)), key=lambda p: (len(p), p))
    idx = {p: i for i, p in enumerate(nodes)}
    n = len(nodes)
    mask = [[nodes[j] == nodes[i][: len(nodes[j])] for j in range(n)] for i in range(n)]
    depth = [len(p) for p in nodes]
    leaves = [p for p in nodes if not any(q[:-1] == p and len(q) == len(p) + 1 for q in nodes)]
    rows = [[idx[leaf[:d]] for d in range(len(leaf) + 1)] for leaf in leaves]
    cand = [0] + [1 + (len(p) - 1) * top_k + p[-1] for p in nodes[1:]]
    return nodes, mask, depth, rows, cand


def random_tree(rng, n_paths, max_depth, top_k):
    n_paths = min(n_paths, sum(top_k**d for d in range(1, max_depth + 1)))
    paths = []
    while len(paths) < n_paths:
        parent = rng.choice([()] + [p for p in paths if len(p) < max_depth])
        child = parent + (rng.randrange(top_k),)
        if child not in paths:
            paths.append(child)
    return paths


def test_worked_example_from_docstring():
    t = MedusaTree.from_paths([(0,), (1,), (0, 0)], top_k=10)
    assert t.depth.tolist() == [0, 1, 1, 2]
    assert t.parent.tolist() == [-1, 0, 0, 1]
    assert t.cand_index.tolist() == [0, 1, 2, 11]
    assert t.mask.int().tolist() == [[1, 0, 0, 0], [1, 1, 0, 0], [1, 0, 1, 0], [1, 1, 0, 1]]
    assert t.retrieve_indices.tolist() == [[0, 2, -1], [0, 1, 3]]
    assert t.positions(torch.tensor([7, 3])).tolist() == [7, 8, 8, 9, 3, 4, 4, 5]


@pytest.mark.parametrize("seed", range(12))
def test_random_trees_match_brute_force(seed):
    rng = random.Random(seed)
    top_k = rng.randint(1, 4)
    paths = random_tree(rng, rng.randint(1, 12), rng.randint(1, 4), top_k)
    rng.shuffle(paths)  # input order must not matter for the tensors, only for trimming
    t = MedusaTree.from_paths(paths, top_k=top_k)
    nodes, mask, depth, rows, cand = brute_force(paths, top_k)
    assert t.num_nodes == len(nodes)
    assert t.mask.tolist() == mask
    assert t.depth.tolist() == depth
    assert t.cand_index.tolist() == cand
    got = [[i for i in r if i >= 0] for r in t.retrieve_indices.tolist()]
    assert sorted(got) == sorted(rows)
    for i, p in enumerate(nodes):  # parent = the node whose path drops the last rank
        assert t.parent[i].item() == (-1 if i == 0 else nodes.index(p[:-1]))


def test_tree_tokens_gathers_head_candidates():
    t = MedusaTree.from_paths([(0,), (1,), (0, 0), (0, 1)], top_k=3)
    root = torch.tensor([5, 6])
    head_topk = torch.arange(2 * 2 * 3).view(2, 2, 3) + 100  # [bs, K, top_k]
    tokens = t.tree_tokens(root, head_topk)
    for b in range(2):
        expect = [root[b].item()] + [
            head_topk[b, len(p) - 1, p[-1]].item() for p in t.paths
        ]
        assert tokens[b].tolist() == expect


def test_bad_trees_raise():
    with pytest.raises(ValueError, match="no parent"):
        MedusaTree.from_paths([(0, 0)], top_k=2)
    with pytest.raises(ValueError, match="rank outside"):
        MedusaTree.from_paths([(2,)], top_k=2)
    with pytest.raises(ValueError, match="distinct"):
        MedusaTree.from_paths([(0,), (0,)], top_k=2)


def test_sparse_tree_builder_is_optimal_for_small_cases():
    acc = [[0.6, 0.2, 0.1], [0.5, 0.3, 0.1], [0.4, 0.2, 0.1]]
    all_nodes = [p for d in range(1, 4) for p in itertools.product(range(3), repeat=d)]
    for size in range(2, 7):
        got = build_sparse_tree(acc, size)
        assert len(got) == size - 1
        MedusaTree.from_paths(got, top_k=3)  # valid: every prefix present
        best = 0.0  # exhaustive search over valid trees of this size
        for combo in itertools.combinations(all_nodes, size - 1):
            s = set(combo)
            if all(len(p) == 1 or p[:-1] in s for p in combo):
                best = max(best, expected_accept_length(combo, acc))
        assert expected_accept_length(got, acc) == pytest.approx(best)


def test_default_tree_prefixes_are_valid_trees():
    for k in range(1, len(DEFAULT_TREE) + 1):
        MedusaTree.from_paths(DEFAULT_TREE[:k], top_k=10)
