"""Extend attention over a cached prefix: only the new tokens are queried (CPU path, pure torch).

An *extend* appends ``e`` new tokens to a request whose first ``p`` tokens are already in the
KV pool (SGLang's radix cache hit). New token ``i`` sits at position ``p + i`` and attends keys
``0 .. p + i`` (causal). SGLang's torch_native extend pads the query to all ``p + e`` positions
and runs full causal attention, so one new token over a 2k-token cached prompt costs a 2k x 2k
attention; here it costs 1 x 2k.

A fork of ``n`` branches over one cached prompt extends ``n`` requests whose first ``P`` KV
slots are the same. Their new tokens are attended to that shared prefix *once*, all ``n * e``
query rows together (a multi-row item of a :class:`~.layout.WorkList`, exactly as the decode
cascade does), and to their own keys separately; the parts merge exactly by log-sum-exp.

Per request the keys split into::

    [0, own_start)            shared levels (work lists over q rows; non-causal: every new
                              token comes after every shared key)
    [own_start, p + e)        the request's own keys, causal for the new tokens

and the own part is done by the cheapest exact route:

* ``e == 1``: one query over its own keys is a decode item, batched with the other one-token
  requests by :class:`~.torch_impl.TorchAttentionLSE` (a fork's branches land here);
* ``e > 1`` and ``own_start == 0`` (nothing shared, e.g. a plain prefill or a chunk of one):
  one ``scaled_dot_product_attention`` call with a bottom-right causal mask (``is_causal`` when
  ``p == 0``, the same call torch_native makes), no LSE needed;
* ``e > 1`` and ``own_start > 0``: explicit logits with the causal mask and the LSE, in query
  chunks of bounded size, then merged with the shared levels.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.nn.functional import scaled_dot_product_attention

from .layout import WorkList, make_worklist
from .torch_impl import TorchAttentionLSE, merge_state

# Logits per query chunk of the causal own part (floats): a few MB, as in torch_impl.
_LOGITS_BUDGET = 1 << 22


@dataclass(frozen=True)
class ExtendRequest:
    """One request of an extend batch.

    Attributes:
        q_start: first row of ``q`` holding this request's new tokens.
        q_len: number of new tokens ``e`` (rows ``q_start .. q_start + e - 1``).
        prefix_len: cached tokens ``p`` before them (new token ``i`` is at position ``p + i``).
        own_start: first position this request attends alone; ``[0, own_start)`` is covered by
            the shared levels (0 = in no shared level). Must be ``<= prefix_len``.
        slots: ``[p + e]`` KV slots of the whole sequence (its ``req_to_token`` row).
    """

    q_start: int
    q_len: int
    prefix_len: int
    own_start: int
    slots: torch.Tensor

    def __post_init__(self):
        if not 0 <= self.own_start <= self.prefix_len:
            raise ValueError(f"own_start {self.own_start} outside [0, prefix_len "
                             f"{self.prefix_len}]")
        if self.slots.numel() != self.prefix_len + self.q_len:
            raise ValueError(f"{self.slots.numel()} slots for {self.prefix_len} cached + "
                             f"{self.q_len} new tokens")


@dataclass
class _CausalItem:
    """A multi-token request attended causally over its own keys (with the LSE)."""

    rows: torch.Tensor  # [e] int64 rows of q
    slots: torch.Tensor  # [L] int64 own KV slots, L = p + e - own_start
    allowed: torch.Tensor  # [e, L] bool, key j visible to new token i


@dataclass
class _SdpaItem:
    """A multi-token request in no shared level: one SDPA call over all its keys."""

    q_lo: int
    q_hi: int
    slots: torch.Tensor  # [p + e] int64
    mask: torch.Tensor | None  # [e, p + e] bool bottom-right causal; None = is_causal (p == 0)


def _bottom_right_causal(q_len: int, key_start: int, prefix_len: int, device) -> torch.Tensor:
    """``[q_len, prefix_len + q_len - key_start]`` bool: key ``key_start + j`` visible to new
    token ``i`` iff ``key_start + j <= prefix_len + i``."""
    keys = torch.arange(key_start, prefix_len + q_len, device=device)[None, :]
    return keys <= (prefix_len + torch.arange(q_len, device=device))[:, None]


class CascadeExtend:
    """Plan once per extend batch, run once per layer (see the module docstring)."""

    def __init__(self, shared: list[WorkList], reqs: list[ExtendRequest]):
        device = reqs[0].slots.device if reqs else torch.device("cpu")
        one = [r for r in reqs if r.q_len == 1]
        own = make_worklist([[r.q_start] for r in one],
                            [r.slots[r.own_start:] for r in one], device=device)
        self._levels = [TorchAttentionLSE(lv) for lv in [*shared, own] if lv.num_items]
        self._causal = [
            _CausalItem(torch.arange(r.q_start, r.q_start + r.q_len, device=device),
                        r.slots[r.own_start:].long(),
                        _bottom_right_causal(r.q_len, r.own_start, r.prefix_len, device))
            for r in reqs if r.q_len > 1 and r.own_start > 0
        ]
        self._sdpa = [
            _SdpaItem(r.q_start, r.q_start + r.q_len, r.slots.long(),
                      None if r.prefix_len == 0
                      else _bottom_right_causal(r.q_len, 0, r.prefix_len, device))
            for r in reqs if r.q_len > 1 and r.own_start == 0
        ]

    def run(
        self, q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, scale: float
    ) -> torch.Tensor:
        """One layer. q ``[T, Hq, D]`` (the batch's new tokens), caches ``[slots, Hkv, D|Dv]``.

        Returns ``o [T, Hq, Dv]`` float32. Rows no request covers are 0.
        """
        T, Hq, _ = q.shape
        o = lse = None
        for lv in self._levels:
            o_l, s_l = lv.run(q, k_cache, v_cache, scale)
            o, lse = (o_l, s_l) if o is None else merge_state(o, lse, o_l, s_l)
        if o is None:
            o = q.new_zeros((T, Hq, v_cache.shape[-1]), dtype=torch.float32)
            lse = q.new_full((T, Hq), float("-inf"), dtype=torch.float32)
        if self._causal:
            qs = q.float() * scale
            for it in self._causal:
                o_c, s_c = _causal_attn(qs[it.rows], k_cache, v_cache, it)
                o[it.rows], lse[it.rows] = merge_state(o[it.rows], lse[it.rows], o_c, s_c)
        for it in self._sdpa:
            o[it.q_lo : it.q_hi] = _sdpa(q[it.q_lo : it.q_hi], k_cache, v_cache, it, scale)
        return o


def _sdpa(q, k_cache, v_cache, it: _SdpaItem, scale: float) -> torch.Tensor:
    """q ``[e, Hq, D]`` over the item's keys; returns ``[e, Hq, Dv]`` in q's dtype."""
    Hq, Hkv = q.shape[1], k_cache.shape[1]
    k = k_cache[it.slots].to(q.dtype).movedim(0, 1)  # [Hkv, L, D]
    v = v_cache[it.slots].to(q.dtype).movedim(0, 1)  # [Hkv, L, Dv]
    out = scaled_dot_product_attention(
        q.movedim(0, 1).unsqueeze(0), k.unsqueeze(0), v.unsqueeze(0),
        attn_mask=it.mask, is_causal=it.mask is None, scale=scale, enable_gqa=Hq != Hkv,
    )  # [1, Hq, e, Dv]
    return out.squeeze(0).movedim(1, 0)


def _causal_attn(
    q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, it: _CausalItem
) -> tuple[torch.Tensor, torch.Tensor]:
    """q ``[e, Hq, D]`` float32, pre-scaled, over the item's ``L`` own keys, causal.

    Returns ``o [e, Hq, Dv]`` and ``lse [e, Hq]`` (float32, natural log). Every new token sees
    at least itself, so no row is empty and the max is finite.
    """
    e, Hq, D = q.shape
    Hkv, Dv = v_cache.shape[1], v_cache.shape[2]
    G, L = Hq // Hkv, it.slots.numel()
    kh = k_cache[it.slots].float().permute(1, 2, 0)  # [Hkv, D, L]
    vh = v_cache[it.slots].float().permute(1, 0, 2)  # [Hkv, L, Dv]
    o = q.new_empty((e, Hq, Dv))
    lse = q.new_empty((e, Hq))
    step = max(1, _LOGITS_BUDGET // max(1, Hq * L))
    for lo in range(0, e, step):
        hi = min(e, lo + step)
        c = hi - lo
        # Row r of the per-KV-head matrix is (token r // G, query head kvh * G + r % G).
        qh = q[lo:hi].view(c, Hkv, G, D).permute(1, 0, 2, 3).reshape(Hkv, c * G, D)
        logits = torch.bmm(qh, kh).view(Hkv, c, G, L)
        logits.masked_fill_(~it.allowed[lo:hi, None, :], float("-inf"))
        m = logits.amax(dim=-1, keepdim=True)
        p = logits.sub_(m).exp_()
        l = p.sum(dim=-1, keepdim=True)  # [Hkv, c, G, 1]
        oc = torch.bmm(p.view(Hkv, c * G, L), vh).view(Hkv, c, G, Dv).div_(l)
        o[lo:hi] = oc.permute(1, 0, 2, 3).reshape(c, Hq, Dv)
        lse[lo:hi] = (m + torch.log(l)).squeeze(-1).permute(1, 0, 2).reshape(c, Hq)
    return o, lse
