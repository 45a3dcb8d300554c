"""Token confidence C_i = −(1/k) Σ_{j≤k} log P_i(j) over the top-k tokens at step i.

Natural log throughout (log-probs, not bits). A peaked distribution has one log-prob near 0
and the other k−1 very negative, so C is large; a flat one gives C ≈ log(V) − small, so
*higher C means more confident*, as in the paper.

The runtime computes C from the model's next-token distribution as the scheduler sees it
before sampling: raw logits plus repetition/frequency penalties, *before* temperature, top-p,
top-k and grammar masks, so C does not change with the sampling settings.
"""

from __future__ import annotations

import torch


def topk_logprob_prefix_means(logits: torch.Tensor, k_max: int) -> torch.Tensor:
    """Confidences for every k ≤ k_max at once, for a batch of rows.

    Args:
        logits: [B, V] float (any float dtype; computed in float32).
        k_max: largest k wanted (clipped to V).

    Returns:
        [B, K] float32 with K = min(k_max, V); column j is C for k = j + 1, i.e.
        −mean of the j + 1 largest log-probs. One pass serves rows that ask for different k.
    """
    k = min(int(k_max), logits.shape[-1])
    x = logits.float()  # no copy for float32 logits
    # log p_j = x_j - logsumexp(x): take the top-k of the logits and subtract the normaliser,
    # instead of materialising a [B, V] log-softmax.
    top = torch.topk(x, k, dim=-1, sorted=True).values  # [B, K], descending
    lse = torch.logsumexp(x, dim=-1, keepdim=True)  # [B, 1]
    counts = torch.arange(1, k + 1, device=logits.device, dtype=torch.float32)  # [K]
    return lse - torch.cumsum(top, dim=-1) / counts


def topk_logprob_mean(logits: torch.Tensor, k: int) -> torch.Tensor:
    """C for one k shared by all rows: logits [B, V] -> [B] float32 (k clipped to V).

    The last column of :func:`topk_logprob_prefix_means` without its [B, K] prefix table.
    """
    k = min(int(k), logits.shape[-1])
    x = logits.float()
    top = torch.topk(x, k, dim=-1, sorted=False).values  # [B, K]: order does not matter here
    return torch.logsumexp(x, dim=-1) - top.sum(dim=-1) / k


def token_confidence(logits: torch.Tensor, k: int) -> torch.Tensor:
    """C for each row of ``logits`` [B, V] (or one row [V]) with a single k -> [B] / []."""
    squeeze = logits.dim() == 1
    out = topk_logprob_mean(logits.unsqueeze(0) if squeeze else logits, k)  # [B]
    return out[0] if squeeze else out


def confidence_from_logprobs(top_logprobs: torch.Tensor) -> torch.Tensor:
    """C from already-selected top-k log-probs [..., k] (e.g. an API's top_logprobs) -> [...]."""
    return -top_logprobs.float().mean(dim=-1)
