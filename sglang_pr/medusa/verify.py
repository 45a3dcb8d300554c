"""From verify logits to accepted tokens, for a mixed batch of greedy and sampling requests.

Layout of what this returns, for bs requests, an n-node tree of depth D (stride D + 1):

    accept_nodes  [bs, D+1]  node ids root, draft 1..m, then -1
    accept_tokens [bs, D+1]  the tokens this step emits: draft 1..m, then the bonus, then 0
    predict_flat  [bs*n]     token emitted *after* node i of request b at b*n + i (only the
                             accepted nodes' entries are meaningful) -- SGLang's spec logprob
                             layout, paired with accept_index_flat = b*n + accept_nodes.

Example (n = 4, D = 2, one request, accepted nodes [0, 2], bonus 9, node 2's token 7):
accept_nodes [[0, 2, -1]], accept_tokens [[7, 9, 0]], predict_flat[0] = 7, predict_flat[2] = 9.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

from sglang_pr.medusa.acceptance import (
    accepted_node_indices,
    greedy_node_accept,
    sample_rows,
    select_longest_path,
    typical_node_accept,
)
from sglang_pr.medusa.config import MedusaConfig
from sglang_pr.medusa.tree import MedusaTree


@dataclass
class VerifyResult:
    accept_nodes: torch.Tensor  # [bs, D+1] int64
    num_drafts: torch.Tensor  # [bs] int64
    last_node: torch.Tensor  # [bs] int64
    accept_tokens: torch.Tensor  # [bs, D+1] int64
    accept_index_flat: torch.Tensor  # [bs, D+1] int64, -1 padded
    num_nodes: int

    @property
    def predict_flat(self) -> torch.Tensor:
        """[bs*n] token emitted after each node (built only when logprobs are asked for)."""
        bs = self.accept_nodes.shape[0]
        out = torch.zeros(bs * self.num_nodes, dtype=torch.long, device=self.accept_nodes.device)
        valid = self.accept_index_flat >= 0
        out[self.accept_index_flat[valid]] = self.accept_tokens[valid]
        return out


def apply_sampling_adjustments(logits: torch.Tensor, sampling_info, n: int) -> None:
    """Logit bias and accumulated penalties ``[bs, V]``, in place, on each request's n rows.

    logits: ``[bs, n, V]`` (or ``[bs * n, V]``). The same relaxed treatment SGLang's own tree
    verify gives penalties (they are those of the step's start, not updated inside the tree).
    """
    per_req = logits.view(-1, n, logits.shape[-1])  # [bs, n, V]
    if getattr(sampling_info, "acc_additive_penalties", None) is not None:
        per_req.add_(sampling_info.acc_additive_penalties[:, None, :])  # broadcast, no copy
    if getattr(sampling_info, "acc_scaling_penalties", None) is not None:
        from sglang.srt.sampling.penaltylib.repetition_penalty import apply_scaling_penalties

        # SGLang's function is torch.compile'd and SGLang's sampler calls it on [rows, V]; a
        # 3-D call would compile a second graph in the serving path, so keep it 2-D.
        apply_scaling_penalties(
            per_req.view(-1, logits.shape[-1]),
            torch.repeat_interleave(sampling_info.acc_scaling_penalties, n, dim=0),
        )
    if getattr(sampling_info, "logit_bias", None) is not None:
        per_req.add_(sampling_info.logit_bias[:, None, :])


def verify_tree(
    tree: MedusaTree,
    tokens: torch.Tensor,
    logits: torch.Tensor,
    sampling_info,
    config: MedusaConfig,
    generator: Optional[torch.Generator] = None,
    seq_lens: Optional[torch.Tensor] = None,
) -> VerifyResult:
    """Accept per request: greedy where top_k == 1, typical acceptance elsewhere.

    Args:
        tokens: [bs, n] int64 tree tokens; logits: [bs, n, V] verify logits (modified in place
        by penalties / logit bias, as SGLang's sampler does).
        seq_lens: [bs] prefix lengths; with the batch's ``sampling_seed`` they seed the bonus
        token at its node's position (prefix + depth), so seeded requests are reproducible.
    """
    bs, n, _ = logits.shape
    apply_sampling_adjustments(logits, sampling_info, n)
    greedy_rows = sampling_info.top_ks.view(-1) <= 1  # [bs] bool
    # SGLang keeps the all-greedy flag on the host; the tensor check (a sync) only when it is off
    all_greedy = bool(getattr(sampling_info, "is_all_greedy", False)) or bool(greedy_rows.all())
    temps = sampling_info.temperatures.view(-1)
    g_accept, argmax = greedy_node_accept(tokens, logits, tree.parent)
    if all_greedy:
        node_accept, score = g_accept, None
    else:
        t_accept, logp = typical_node_accept(
            tokens, logits, tree.parent, temps, config.typical_epsilon, config.typical_delta
        )
        node_accept = torch.where(greedy_rows.view(-1, 1), g_accept, t_accept)
        score = logp.masked_fill(greedy_rows.view(-1, 1), 0.0)
    best, num_drafts = select_longest_path(node_accept, tree.retrieve_indices, score)
    accept_nodes = accepted_node_indices(tree.retrieve_indices, best, num_drafts)
    last_node = accept_nodes.gather(1, num_drafts.view(-1, 1)).squeeze(1)
    rows = torch.arange(bs, device=logits.device)
    bonus = argmax[rows, last_node]
    if not all_greedy:
        samp = ~greedy_rows
        bonus = bonus.clone()
        bonus[samp] = sample_rows(
            logits[rows[samp], last_node[samp]],
            temps[samp],
            sampling_info.top_ps.view(-1)[samp],
            sampling_info.top_ks.view(-1)[samp],
            sampling_info.min_ps.view(-1)[samp],
            generator,
            *_seeded(sampling_info, tree, seq_lens, last_node, samp),
        )
    return _pack(tokens, accept_nodes, num_drafts, last_node, bonus)


def _seeded(sampling_info, tree: MedusaTree, seq_lens, last_node, samp) -> tuple:
    """``(seeds, positions)`` of the sampled rows for seeded sampling, or ``(None, None)``."""
    seeds = getattr(sampling_info, "sampling_seed", None)
    if seeds is None or seq_lens is None:
        return None, None
    positions = seq_lens.view(-1).long() + tree.depth[last_node]  # [bs] position of the node
    return seeds.view(-1)[samp], positions[samp]


def _pack(tokens, accept_nodes, num_drafts, last_node, bonus) -> VerifyResult:
    bs, n = tokens.shape
    j = torch.arange(accept_nodes.shape[1], device=tokens.device).view(1, -1)
    m = num_drafts.view(-1, 1)
    # emitted token j = token of accepted node j + 1 (a draft) for j < m, the bonus at j = m
    nxt = accept_nodes.roll(-1, dims=1).clamp(min=0)
    accept_tokens = torch.where(j < m, tokens.gather(1, nxt), 0)
    accept_tokens.scatter_(1, m, bonus.view(-1, 1))
    base = (torch.arange(bs, device=tokens.device) * n).view(-1, 1)
    accept_index_flat = torch.where(accept_nodes >= 0, base + accept_nodes, -1)
    return VerifyResult(
        accept_nodes=accept_nodes,
        num_drafts=num_drafts,
        last_node=last_node,
        accept_tokens=accept_tokens,
        accept_index_flat=accept_index_flat,
        num_nodes=n,
    )
