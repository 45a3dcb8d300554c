"""Medusa candidate trees as data: paths -> tree tensors (mask, positions, retrieve indices).

A tree is given as a list of *paths*; a path is a tuple of per-head ranks. Path (0, 2) is the
node reached by taking head 1's top-1 token and then head 2's third-best token. Node 0 is the
root: the token the base model itself produced last step (its KV is not cached yet), so every
verify step feeds ``num_nodes = len(paths) + 1`` tokens per request.

Worked example, ``paths = [(0,), (1,), (0, 0)]`` and ``top_k = 10``. Nodes are numbered by
(depth, path), the root first::

    node      path     depth  parent  cand_index            ancestors-or-self (mask row)
    0         ()       0      -1      0   (the root token)   {0}
    1         (0,)     1      0       1 + 0*10 + 0 = 1       {0, 1}
    2         (1,)     1      0       1 + 0*10 + 1 = 2       {0, 2}
    3         (0, 0)   2      1       1 + 1*10 + 0 = 11      {0, 1, 3}

    mask (row = query node, col = key node, True = may attend):
        [[1, 0, 0, 0],
         [1, 1, 0, 0],
         [1, 0, 1, 0],
         [1, 1, 0, 1]]
    position of node i = prefix_len + depth[i]        -> prefix_len + [0, 1, 1, 2]
    retrieve_indices (one row per leaf, root..leaf, -1 padded), leaves 2 and 3:
        [[0, 2, -1],
         [0, 1,  3]]

``cand_index`` indexes the flat candidate vector ``[root, head1 top-k..., head2 top-k..., ...]``
(length 1 + K*top_k), so ``tree_tokens = flat[:, cand_index]``. Each node also attends to the
whole cached prefix; only the block among the tree nodes needs the mask above.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass
from typing import Sequence

import torch

from sglang_pr.medusa.config import Path_


@dataclass(frozen=True)
class MedusaTree:
    """Tensors (int64 / bool, on ``device``) describing one sparse candidate tree."""

    paths: tuple[Path_, ...]  # canonical order: node i + 1 is paths[i]
    top_k: int
    depth: torch.Tensor  # [n] int64
    parent: torch.Tensor  # [n] int64, -1 for the root
    cand_index: torch.Tensor  # [n] int64 into [root, K * top_k head candidates]
    mask: torch.Tensor  # [n, n] bool, mask[i, j] = j is an ancestor of i or i itself
    retrieve_indices: torch.Tensor  # [num_leaves, max_depth + 1] int64, -1 padded

    @property
    def num_nodes(self) -> int:
        return int(self.depth.numel())

    @property
    def max_depth(self) -> int:
        return int(self.retrieve_indices.shape[1]) - 1

    @classmethod
    def from_paths(
        cls, paths: Sequence[Sequence[int]], top_k: int, device: torch.device | str = "cpu"
    ) -> "MedusaTree":
        """Build the tree tensors; raises ValueError on a path whose parent is missing."""
        canon = sorted({tuple(int(r) for r in p) for p in paths}, key=lambda p: (len(p), p))
        if len(canon) != len(paths):
            raise ValueError("tree paths must be distinct")
        index = {(): 0}
        for i, p in enumerate(canon):
            if len(p) == 0 or p[:-1] not in index:
                raise ValueError(f"tree path {list(p)} has no parent path {list(p[:-1])}")
            if any(r < 0 or r >= top_k for r in p):
                raise ValueError(f"tree path {list(p)} has a rank outside [0, {top_k})")
            index[p] = i + 1
        n = len(canon) + 1
        all_paths = [()] + canon
        depth = [len(p) for p in all_paths]
        parent = [-1] + [index[p[:-1]] for p in canon]
        cand = [0] + [1 + (len(p) - 1) * top_k + p[-1] for p in canon]
        mask = torch.zeros(n, n, dtype=torch.bool)
        for i, p in enumerate(all_paths):
            for d in range(len(p) + 1):
                mask[i, index[p[:d]]] = True
        has_child = set(parent[1:])
        leaves = [i for i in range(n) if i not in has_child]
        max_depth = max(depth)
        retrieve = torch.full((len(leaves), max_depth + 1), -1, dtype=torch.long)
        for row, leaf in enumerate(leaves):
            p = all_paths[leaf]
            for d in range(len(p) + 1):
                retrieve[row, d] = index[p[:d]]
        return cls(
            paths=tuple(canon),
            top_k=top_k,
            depth=torch.tensor(depth, dtype=torch.long, device=device),
            parent=torch.tensor(parent, dtype=torch.long, device=device),
            cand_index=torch.tensor(cand, dtype=torch.long, device=device),
            mask=mask.to(device),
            retrieve_indices=retrieve.to(device),
        )

    def tree_tokens(self, root: torch.Tensor, head_topk: torch.Tensor) -> torch.Tensor:
        """Candidate tokens per node.

        Args:
            root: [bs] int64, the last token the base model produced (not yet in KV).
            head_topk: [bs, K, top_k] int64, head k's ranked candidates (k = 0 is head 1).
        Returns:
            [bs, n] int64 tokens, column i = node i.
        """
        flat = torch.cat([root.view(-1, 1), head_topk.flatten(1)], dim=1)  # [bs, 1+K*top_k]
        return flat[:, self.cand_index]

    def positions(self, prefix_lens: torch.Tensor) -> torch.Tensor:
        """[bs] prefix lengths -> [bs * n] int64 positions (prefix_len + depth), row-major."""
        return (prefix_lens.view(-1, 1).long() + self.depth.view(1, -1)).flatten()


def build_sparse_tree(accuracy: Sequence[Sequence[float]], num_nodes: int) -> list[Path_]:
    """Greedy tree of ``num_nodes`` (incl. root) maximising the expected accepted length.

    ``accuracy[d][r]`` estimates P(head d+1's rank-r token is the right one). A node's value is
    the product of its path's accuracies (the chance the whole path is accepted) and the
    expected accepted length of a tree is the sum of its nodes' values, so taking nodes in
    decreasing value (a heap over the frontier) is optimal for this independence model. A
    child is never worth more than its parent, so the output is in priority order: every
    prefix of it is a valid tree.
    """
    num_heads = len(accuracy)
    frontier: list[tuple[float, Path_]] = []
    for r, a in enumerate(accuracy[0]):
        heapq.heappush(frontier, (-float(a), (r,)))
    out: list[Path_] = []
    while frontier and len(out) < num_nodes - 1:
        neg_value, path = heapq.heappop(frontier)
        out.append(path)
        if len(path) < num_heads:
            for r, a in enumerate(accuracy[len(path)]):
                heapq.heappush(frontier, (neg_value * float(a), path + (r,)))
    return out


def expected_accept_length(paths: Sequence[Path_], accuracy: Sequence[Sequence[float]]) -> float:
    """1 (the bonus token) + Σ_nodes Π accuracy along the node's path (independence model)."""
    total = 1.0
    for p in paths:
        v = 1.0
        for d, r in enumerate(p):
            v *= float(accuracy[d][r])
        total += v
    return total
