"""Pure-torch references: the ground truth every kernel in this package is tested against.

Written for obviousness, not speed: float64 throughout, one work item / request at a time.
LSE base: natural log (``lse = log(sum_i exp(scale * q . k_i))``) at every interface here.
"""

from __future__ import annotations

import torch

from .layout import WorkList


def merge_state_ref(
    v_a: torch.Tensor, s_a: torch.Tensor, v_b: torch.Tensor, s_b: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Merge two partial attention states over disjoint key sets I and J (natural-log LSE).

    v(I u J) = (v(I) e^s(I) + v(J) e^s(J)) / (e^s(I) + e^s(J)),  s(I u J) = log(e^s(I) + e^s(J)).

    Args:
        v_a, v_b: ``[N, H, D]`` partial outputs.  s_a, s_b: ``[N, H]`` their LSEs (natural log;
            ``-inf`` marks an empty key set).
    Returns:
        ``(v [N, H, D] float64, s [N, H] float64)``.
    """
    sa, sb = s_a.double(), s_b.double()
    s = torch.logaddexp(sa, sb)
    # Weights e^{s_x - s}; an empty set (s_x = -inf) gets weight 0, and s = -inf only if both
    # are empty, where the output is defined as 0.
    safe = torch.where(torch.isinf(s), torch.zeros_like(s), s)
    wa = torch.exp(sa - safe).nan_to_num(0.0)
    wb = torch.exp(sb - safe).nan_to_num(0.0)
    v = v_a.double() * wa[..., None] + v_b.double() * wb[..., None]
    return v, s


def attention_lse_ref(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    work: WorkList,
    scale: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Attention of each work item's query rows over its KV slots, with the LSE.

    Args:
        q: ``[B, Hq, D]``.  k_cache: ``[num_slots, Hkv, D]``.  v_cache: ``[num_slots, Hkv, Dv]``.
        work: the items (see :mod:`.layout`); ``Hq`` must be a multiple of ``Hkv`` (GQA).
    Returns:
        ``o [B, Hq, Dv]`` float64 (0 for rows no item covers) and ``lse [B, Hq]`` float64,
        natural log (``-inf`` for rows no item covers).
    """
    B, Hq, _ = q.shape
    Hkv = k_cache.shape[1]
    group = Hq // Hkv
    o = torch.zeros(B, Hq, v_cache.shape[-1], dtype=torch.float64)
    lse = torch.full((B, Hq), float("-inf"), dtype=torch.float64)
    qo_indptr, kv_indptr = work.qo_indptr.tolist(), work.kv_indptr.tolist()
    rows_all, slots_all = work.qo_rows.long().cpu(), work.kv_indices.long().cpu()
    for w in range(work.num_items):
        rows = rows_all[qo_indptr[w] : qo_indptr[w + 1]]
        slots = slots_all[kv_indptr[w] : kv_indptr[w + 1]]
        if rows.numel() == 0 or slots.numel() == 0:
            continue
        # Expand KV heads to query heads: query head h reads KV head h // group.
        k = k_cache[slots].double().cpu().repeat_interleave(group, dim=1)  # [L, Hq, D]
        v = v_cache[slots].double().cpu().repeat_interleave(group, dim=1)  # [L, Hq, Dv]
        qq = q[rows].double().cpu()  # [n, Hq, D]
        logits = torch.einsum("nhd,lhd->nhl", qq, k) * scale
        s = torch.logsumexp(logits, dim=-1)  # [n, Hq]
        p = torch.exp(logits - s[..., None])
        o[rows] = torch.einsum("nhl,lhd->nhd", p, v)
        lse[rows] = s
    return o, lse


def flat_decode_ref(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    req_slots: list[torch.Tensor],
    scale: float,
) -> torch.Tensor:
    """Flat decode attention: request ``b`` attends its whole KV ``req_slots[b]``.

    This is what SGLang's flat decode backends compute (one query per request).

    Returns:
        ``o [B, Hq, Dv]`` float64.
    """
    from .layout import make_worklist

    work = make_worklist([[b] for b in range(len(req_slots))], req_slots, device="cpu")
    return attention_lse_ref(q, k_cache, v_cache, work, scale)[0]


def extend_attention_ref(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    seq_slots: list[torch.Tensor],
    extend_lens: list[int],
    scale: float,
) -> torch.Tensor:
    """Extend attention the plain way: each request's full causal attention, new rows kept.

    Request ``b`` owns the next ``extend_lens[b]`` rows of q (its new tokens, in order) and its
    whole sequence's KV slots ``seq_slots[b]`` (``[p + e]``, cached prefix first). Every one of
    its ``p + e`` positions is queried with a causal mask (new rows' queries from q, cached
    rows' queries irrelevant: only the last ``e`` output rows are kept).

    Returns:
        ``o [sum(extend_lens), Hq, Dv]`` float64.
    """
    Hq, Hkv = q.shape[1], k_cache.shape[1]
    outs, start = [], 0
    for slots, e in zip(seq_slots, extend_lens):
        L = slots.numel()
        k = k_cache[slots.long()].double().cpu().repeat_interleave(Hq // Hkv, dim=1)  # [L, Hq, D]
        v = v_cache[slots.long()].double().cpu().repeat_interleave(Hq // Hkv, dim=1)
        qq = torch.zeros(L, Hq, q.shape[2], dtype=torch.float64)
        qq[L - e :] = q[start : start + e].double().cpu()
        logits = torch.einsum("ihd,jhd->hij", qq, k) * scale
        causal = torch.ones(L, L, dtype=torch.bool).tril()
        p = torch.softmax(logits.masked_fill(~causal, float("-inf")), dim=-1)
        outs.append(torch.einsum("hij,jhd->ihd", p, v)[L - e :])
        start += e
    return torch.cat(outs) if outs else torch.zeros(0, Hq, v_cache.shape[-1], dtype=torch.float64)
