"""Accepting Medusa candidates: greedy and typical acceptance as pure tensor functions.

Every function works per *node* first and per *path* second. Node i's candidate token is
judged against the base model's distribution at its parent (the logits row of node
``parent[i]`` in the verify forward): that row is what the base model would have predicted
right after the parent. The root (node 0) is always accepted: it is the token the base model
produced last step. A path's accepted length is the number of leading non-root nodes that are
all accepted; the longest path wins.

Worked example (tree of ``tree.py``'s docstring: nodes 0 root, 1 = (0,), 2 = (1,), 3 = (0, 0);
retrieve rows [[0, 2, -1], [0, 1, 3]]), greedy, argmax per node row = [7, 5, 9, 4]:
tokens = [3, 8, 7, 5]  -> node 1 (token 8) vs argmax[0] = 7: no; node 2 (7) vs 7: yes;
node 3 (5) vs argmax[1] = 5: yes, but its parent node 1 failed. Path [0, 2] accepts 1 draft,
path [0, 1, 3] accepts 0 -> best path 0, accepted nodes [0, 2], bonus = argmax[2] = 9;
the step emits tokens [7, 9] (the accepted draft, then the bonus).
"""

from __future__ import annotations

from typing import Optional

import torch

from sglang_pr.cpu_platform.seeded_sampling import multinomial_with_seed


def greedy_node_accept(
    tokens: torch.Tensor, logits: torch.Tensor, parent: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Greedy acceptance per node.

    Args:
        tokens: [bs, n] int64 candidate token of each node.
        logits: [bs, n, V] verify logits, row i = distribution after node i.
        parent: [n] int64, -1 for the root.
    Returns:
        accept [bs, n] bool (root True), argmax [bs, n] int64 (the base model's choice after
        each node; the bonus token is argmax at the last accepted node).
    """
    argmax = logits.argmax(dim=-1)  # [bs, n]
    par = parent.clamp(min=0)
    accept = tokens == argmax[:, par]
    accept[:, 0] = True
    return accept, argmax


def typical_node_accept(
    tokens: torch.Tensor,
    logits: torch.Tensor,
    parent: torch.Tensor,
    temperature: torch.Tensor,
    epsilon: float,
    delta: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Typical acceptance per node: accept x if p(x) > min(ε, δ·exp(−H(p))).

    p is the base distribution at the node's parent with the request's temperature,
    p = softmax(logits / T); H is its entropy in nats (natural log).

    Args:
        tokens: [bs, n] int64; logits: [bs, n, V]; parent: [n] int64;
        temperature: [bs] float (> 0).
    Returns:
        accept [bs, n] bool (root True), logp [bs, n] float32 = log p(token) at the parent
        (0 for the root), used to break ties between equally long paths.
    """
    scaled = logits.float() / temperature.view(-1, 1, 1).float()
    logp_all = torch.log_softmax(scaled, dim=-1)  # [bs, n, V]
    p_all = logp_all.exp()
    entropy = -(p_all * logp_all).sum(-1)  # [bs, n] nats
    threshold = (float(delta) * torch.exp(-entropy)).clamp(max=float(epsilon))
    par = parent.clamp(min=0)
    # log p_parent(i)(token_i), read in place (no [bs, n, V] copy of the parents' rows).
    rows = torch.arange(logp_all.shape[0], device=logp_all.device)[:, None]
    logp = logp_all[rows, par, tokens]  # [bs, n]
    accept = logp.exp() > threshold[:, par]
    accept[:, 0] = True
    logp[:, 0] = 0.0
    return accept, logp


def select_longest_path(
    node_accept: torch.Tensor, retrieve: torch.Tensor, score: Optional[torch.Tensor] = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """The path with the most leading accepted drafts (ties: higher summed score, then first).

    Args:
        node_accept: [bs, n] bool.
        retrieve: [P, D+1] int64 node indices root..leaf, -1 padded.
        score: optional [bs, n] float per-node score (e.g. log p), summed over accepted drafts.
    Returns:
        best_path [bs] int64, num_drafts [bs] int64 (accepted non-root nodes on it).
    """
    valid = retrieve >= 0
    ri = retrieve.clamp(min=0)
    acc = node_accept[:, ri] & valid  # [bs, P, D+1]
    lead = acc[:, :, 1:].long().cumprod(dim=-1)  # [bs, P, D] 1 while still accepted
    counts = lead.sum(-1)  # [bs, P]
    if score is None:
        best = counts.argmax(dim=-1)  # first maximum
    else:
        path_score = (score[:, ri][:, :, 1:] * lead).sum(-1)  # [bs, P]
        longest = counts == counts.max(dim=-1, keepdim=True).values
        masked = torch.where(longest, path_score, -float("inf"))
        best = masked.argmax(dim=-1)
    num_drafts = counts.gather(1, best.view(-1, 1)).squeeze(1)
    return best, num_drafts


def accepted_node_indices(
    retrieve: torch.Tensor, best_path: torch.Tensor, num_drafts: torch.Tensor
) -> torch.Tensor:
    """[bs, D+1] int64 node indices root, draft 1, ..., draft m of the winning path; -1 after."""
    rows = retrieve[best_path]  # [bs, D+1]
    keep = torch.arange(rows.shape[1], device=rows.device).view(1, -1) <= num_drafts.view(-1, 1)
    return torch.where(keep, rows, -1)


def sample_rows(
    logits: torch.Tensor,
    temperature: torch.Tensor,
    top_p: torch.Tensor,
    top_k: torch.Tensor,
    min_p: torch.Tensor,
    generator: Optional[torch.Generator] = None,
    seeds: Optional[torch.Tensor] = None,
    positions: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """Sample one token per row like SGLang's pytorch sampler (temperature, top-k, top-p, min-p).

    Args:
        logits: [m, V]; temperature/top_p/min_p: [m] float; top_k: [m] int (>= 1).
        seeds, positions: [m] int; when given, each row is drawn with SGLang's seeded sampler
            (hash of seed and position), so a request's ``sampling_seed`` reproduces its tokens.
    Returns:
        [m] int64 sampled token ids.
    """
    probs = torch.softmax(logits.float() / temperature.view(-1, 1).float(), dim=-1)
    sorted_p, sorted_idx = probs.sort(dim=-1, descending=True)
    ranks = torch.arange(sorted_p.shape[-1], device=probs.device).view(1, -1)
    cum_before = sorted_p.cumsum(-1) - sorted_p
    drop = (ranks >= top_k.view(-1, 1)) | (cum_before > top_p.view(-1, 1))
    drop |= sorted_p < sorted_p[:, :1] * min_p.view(-1, 1)
    drop[:, 0] = False  # the most likely token always survives
    sorted_p = sorted_p.masked_fill(drop, 0.0)
    if seeds is not None:
        choice = multinomial_with_seed(sorted_p.double().log(), seeds, positions)  # [m, 1]
    else:
        choice = torch.multinomial(sorted_p, 1, generator=generator)  # [m, 1]
    return sorted_idx.gather(1, choice).squeeze(1)

