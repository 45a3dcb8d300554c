"""DeepConf's per-token confidence under MEDUSA: fed from the verify logits.

Plain decoding gives DeepConf one logits row per request per step (its sampling observer).
The observer does not run on a speculative runner, so MEDUSA feeds DeepConf itself, through
DeepConf's public entry point ``early_stop.push_token_confidences`` — once per step, before
SGLang's result processing calls ``req.update_finish_state(n_accepted)`` (which is where
DeepConf decides, and cuts an accepted run after the token where the window mean fell):

    emitted token j of request b  <-  produced by the verify row of its j-th accepted node
    confidence C_j = token_confidence(that row, k)   (DeepConf's definition, natural log)

The rows are the logits after penalties / logit bias and before temperature, as DeepConf
expects. Only requests that opted into DeepConf cost anything; the others skip all of this.
"""

from __future__ import annotations

import torch

from sglang_pr.deepconf.confidence import topk_logprob_prefix_means
from sglang_pr.deepconf.early_stop import push_token_confidences, state_of


def accepted_rows(logits: torch.Tensor, accept_nodes: torch.Tensor) -> torch.Tensor:
    """[bs, n, V] verify logits, [bs, D+1] accepted node ids (-1 pad) -> [bs, D+1, V]."""
    idx = accept_nodes.clamp(min=0)
    return logits.gather(1, idx.unsqueeze(-1).expand(-1, -1, logits.shape[-1]))


def _tracked(batch) -> list[tuple[int, object, object]]:
    out = []
    for i, req in enumerate(batch.reqs):
        st = state_of(req)
        if st is not None:
            out.append((i, req, st))
    return out


def _push(tracked, rows: torch.Tensor, lens: list[int]) -> None:
    """rows [m, W, V] for the m tracked requests; lens[i] tokens emitted by request i."""
    k_max = max(st.settings.k for _, _, st in tracked)
    m, w, v = rows.shape
    table = topk_logprob_prefix_means(rows.reshape(m * w, v), k_max).view(m, w, -1)
    for i, (_, req, st) in enumerate(tracked):
        k = min(st.settings.k, table.shape[-1])
        push_token_confidences(req, table[i, : lens[i], k - 1])


def publish_verify(batch, logits: torch.Tensor, vr) -> None:
    """After a verify step: one confidence per emitted token, for DeepConf requests."""
    tracked = _tracked(batch)
    if not tracked:
        return
    idx = torch.tensor([i for i, _, _ in tracked], device=logits.device)
    rows = accepted_rows(logits[idx], vr.accept_nodes[idx])
    lens = (vr.num_drafts[idx] + 1).tolist()
    _push(tracked, rows, lens)


def publish_extend(batch, hidden: torch.Tensor, lm_head: torch.Tensor) -> None:
    """After a prefill step: the first token's confidence.

    The sampler overwrites the prefill logits in place (temperature, softmax), so the raw row
    is rebuilt from the captured last hidden state: logits = hidden [m, H] @ lm_head [V, H]^T,
    the same product the logits processor computes (no penalties apply before any output).
    """
    tracked = _tracked(batch)
    if not tracked or hidden is None or lm_head is None:
        return
    idx = torch.tensor([i for i, _, _ in tracked], device=hidden.device)
    logits = hidden[idx].to(lm_head.dtype) @ lm_head.T  # [m, V]
    _push(tracked, logits.unsqueeze(1), [1] * len(tracked))
