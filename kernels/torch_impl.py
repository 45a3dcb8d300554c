"""CPU path: vectorised pure-torch kernels (float32 softmax, natural-log LSE).

``TorchAttentionLSE`` follows FlashInfer's plan/run split: ``__init__`` does the index work once
per batch (slicing the work list per item; chunk contiguity is found on first use and kept),
``run`` is called once per layer and only reads KV and multiplies.

* every item is done chunk by chunk along its keys (``_KV_CHUNK`` keys per chunk): a run of
  consecutive slots is read as a slice of the pool, anything else gathered with
  ``index_select`` into a small buffer that stays in cache for both matmuls;
* a multi-row item (a fork group at the prefix level) multiplies each chunk against all
  ``n * G`` query rows of the group (G = GQA ratio) in one batched matmul per KV head - this is
  where cascade saves memory traffic: the prefix is read once for the whole group;
* one-row items with at most ``_SHORT_KV`` keys (the branches' own suffixes at decode) are
  padded to a common length and done together, a few hundred at a time: one gather and two
  batched matmuls for all of them instead of ~12 small ops each. Padding keys are masked to
  ``-inf`` (weight exactly 0). Longer one-row items keep the chunked loop, whose per-item cost
  is amortised over their keys and whose buffers stay small.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from .layout import WorkList

# Items are processed in chunks of at most _KV_CHUNK keys and _LOGITS_BUDGET logits: the chunk's
# K/V and logits stay in cache between the gather and both matmuls (on a 2-core x86 box, 256-512
# keys per chunk ran ~1.5x faster than one whole-prefix pass).
_KV_CHUNK = 512
_LOGITS_BUDGET = 1 << 22
# One-row items up to _SHORT_KV keys are batched (see the module docstring), at most
# _SHORT_SLOTS padded slots per batch so the gathered K/V stay a few MB. Measured on CPU
# (P=8192, n=16, S=32, 8 KV heads of 128): the suffix level went from ~1.9 ms to ~1.0 ms.
_SHORT_KV = 512
_SHORT_SLOTS = 2048


def merge_state(
    v_a: torch.Tensor, s_a: torch.Tensor, v_b: torch.Tensor, s_b: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact merge of two attention states over disjoint key sets (natural-log LSE).

    Args:
        v_a, v_b: ``[..., D]`` partial outputs.  s_a, s_b: ``[...]`` float32 LSEs, natural log;
            ``-inf`` = empty key set (weight 0).
    Returns:
        ``(v [..., D] float32, s [...] float32)``; both sets empty gives ``(0, -inf)``.
    """
    s_max = torch.maximum(s_a, s_b)
    # Subtract the max first so neither exponent overflows; keep -inf rows finite here.
    shift = torch.where(torch.isinf(s_max), torch.zeros_like(s_max), s_max)
    w_a, w_b = torch.exp(s_a - shift), torch.exp(s_b - shift)
    denom = w_a + w_b
    inv = torch.where(denom > 0, 1.0 / denom, torch.zeros_like(denom))
    v = (v_a.float() * (w_a * inv)[..., None]) + (v_b.float() * (w_b * inv)[..., None])
    return v, shift + torch.log(denom)


def merge_states(v: torch.Tensor, s: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Merge ``S`` states at once. v: ``[S, ..., D]``, s: ``[S, ...]`` (natural log)."""
    s_max = s.max(dim=0).values
    shift = torch.where(torch.isinf(s_max), torch.zeros_like(s_max), s_max)
    w = torch.exp(s - shift)  # [S, ...]
    denom = w.sum(dim=0)
    inv = torch.where(denom > 0, 1.0 / denom, torch.zeros_like(denom))
    out = (v.float() * w[..., None]).sum(dim=0) * inv[..., None]
    return out, shift + torch.log(denom)


@dataclass
class _ChunkedItem:
    """An item done chunk by chunk along its keys (multi-row, or one row with many keys)."""

    rows: torch.Tensor  # [n] int64
    slots: torch.Tensor  # [L] int64
    _chunks: dict = field(default_factory=dict)  # chunk size -> list of chunks

    def chunks(self, size: int) -> list[tuple[int, int] | torch.Tensor]:
        """The slots in chunks of ``size``: ``(lo, hi)`` for a run of consecutive slots (read
        as a slice of the pool, no copy - SGLang's allocator hands a prompt mostly consecutive
        slots), else the slot tensor (gathered)."""
        if size not in self._chunks:
            steps = self.slots[1:] - self.slots[:-1] == 1  # [L - 1]
            out: list[tuple[int, int] | torch.Tensor] = []
            for c0 in range(0, self.slots.numel(), size):
                sl = self.slots[c0 : c0 + size]
                if bool(steps[c0 : c0 + sl.numel() - 1].all()):
                    out.append((int(sl[0]), int(sl[0]) + sl.numel()))
                else:
                    out.append(sl)
            self._chunks[size] = out
        return self._chunks[size]


class TorchAttentionLSE:
    """Attention with LSE over a :class:`WorkList` on CPU (or any torch device).

    Rows no item covers come back as ``o = 0``, ``lse = -inf``.
    """

    def __init__(self, work: WorkList):
        self.work = work
        qo_ptr, kv_ptr = work.qo_indptr.tolist(), work.kv_indptr.tolist()
        rows_all, slots_all = work.qo_rows.long(), work.kv_indices.long()
        self.chunked: list[_ChunkedItem] = []
        short: list[tuple[torch.Tensor, torch.Tensor]] = []
        for w in range(work.num_items):
            rows = rows_all[qo_ptr[w] : qo_ptr[w + 1]]
            slots = slots_all[kv_ptr[w] : kv_ptr[w + 1]]
            if rows.numel() == 0 or slots.numel() == 0:
                continue
            if rows.numel() == 1 and slots.numel() <= _SHORT_KV:
                short.append((rows, slots))
            else:
                self.chunked.append(_ChunkedItem(rows, slots))
        self.short = _ShortBatch.split(short)
        self._ws = _Workspace()  # per plan: reused by every layer's run

    def run(
        self, q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, scale: float
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One layer. q ``[B, Hq, D]``, caches ``[slots, Hkv, D|Dv]``.

        Returns ``o [B, Hq, Dv]`` float32 and ``lse [B, Hq]`` float32 (natural log).
        """
        B, Hq, _ = q.shape
        o = q.new_zeros((B, Hq, v_cache.shape[-1]), dtype=torch.float32)
        lse = q.new_full((B, Hq), float("-inf"), dtype=torch.float32)
        qs = q.float() * scale  # scale the few queries, not the many logits
        for it in self.chunked:
            o_i, s_i = _chunked_attn(qs[it.rows], k_cache, v_cache, it, self._ws)
            o[it.rows], lse[it.rows] = o_i, s_i
        for sb in self.short:
            o[sb.rows], lse[sb.rows] = _short_attn(qs[sb.rows], k_cache, v_cache, sb, self._ws)
        return o, lse


@dataclass
class _ShortBatch:
    """One-row items padded to a common key count ``L``, done in one pass.

    Worked example: items (row 3, slots [7 8 9]) and (row 0, slots [4]) give ``L = 3``,
    ``rows [3, 0]``, ``slots [[7 8 9], [4 0 0]]`` (slot 0 is only a placeholder: read, then
    masked) and ``pad [[F F F], [F T T]]``. With 2 KV heads the gather reads pool rows of one
    head each (``pool.view(-1, D)`` row ``slot * Hkv + h``) in the order ``[b, Hkv, L]``:
    ``[14 16 18 | 15 17 19 | 8 0 0 | 9 1 1]`` - already the per-(item, head) key matrices that
    ``bmm`` wants, so no transposing copy follows the gather.
    """

    rows: torch.Tensor  # [b] int64
    slots: torch.Tensor  # [b, L] int64
    pad: torch.Tensor | None  # [b, 1, 1, L] bool, True = padding; None when nothing is padded
    _head_rows: dict = field(default_factory=dict)  # Hkv -> [b * Hkv * L] int64

    @classmethod
    def split(cls, items: list[tuple[torch.Tensor, torch.Tensor]]) -> list["_ShortBatch"]:
        """Items sorted by length, cut into batches of at most ``_SHORT_SLOTS`` padded slots."""
        items = sorted(items, key=lambda it: it[1].numel())
        out, start = [], 0
        while start < len(items):
            end = start + 1
            while end < len(items) and (end + 1 - start) * items[end][1].numel() <= _SHORT_SLOTS:
                end += 1
            out.append(cls._make(items[start:end]))
            start = end
        return out

    @classmethod
    def _make(cls, items: list[tuple[torch.Tensor, torch.Tensor]]) -> "_ShortBatch":
        lens = torch.tensor([s.numel() for _, s in items])  # [b]
        slots = torch.nn.utils.rnn.pad_sequence([s for _, s in items], batch_first=True)  # [b, L]
        pad = torch.arange(slots.shape[1])[None, :] >= lens[:, None]  # [b, L]
        return cls(
            rows=torch.cat([r for r, _ in items]),
            slots=slots,
            pad=pad.to(slots.device)[:, None, None, :] if bool(pad.any()) else None,
        )

    def head_rows(self, num_kv_heads: int) -> torch.Tensor:
        if num_kv_heads not in self._head_rows:
            heads = torch.arange(num_kv_heads, device=self.slots.device)[None, :, None]
            self._head_rows[num_kv_heads] = (self.slots[:, None, :] * num_kv_heads + heads).view(-1)
        return self._head_rows[num_kv_heads]


def _short_attn(
    q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, sb: _ShortBatch,
    ws: "_Workspace",
) -> tuple[torch.Tensor, torch.Tensor]:
    """q ``[b, Hq, D]`` float32 (pre-scaled). Returns ``o [b, Hq, Dv]``, ``lse [b, Hq]`` (ln)."""
    b, Hq, D = q.shape
    Hkv, Dv = v_cache.shape[1], v_cache.shape[2]
    G, L = Hq // Hkv, sb.slots.shape[1]
    idx = sb.head_rows(Hkv)
    # Pool rows of one head each; reshape is a view for SGLang's contiguous per-layer buffers.
    k_buf = ws.get("sk", (idx.numel(), D), k_cache)
    v_buf = ws.get("sv", (idx.numel(), Dv), v_cache)
    k = torch.index_select(k_cache.reshape(-1, D), 0, idx, out=k_buf)
    v = torch.index_select(v_cache.reshape(-1, Dv), 0, idx, out=v_buf)
    kh = k.to(torch.float32).view(b * Hkv, L, D)
    vh = v.to(torch.float32).view(b * Hkv, L, Dv)
    logits = torch.bmm(q.view(b * Hkv, G, D), kh.transpose(1, 2))  # [b * Hkv, G, L]
    if sb.pad is not None:
        logits.view(b, Hkv, G, L).masked_fill_(sb.pad, float("-inf"))
    m = logits.amax(dim=-1, keepdim=True)  # finite: every item has at least one real key
    p = logits.sub_(m).exp_()
    l = p.sum(dim=-1, keepdim=True)  # [b * Hkv, G, 1]
    o = torch.bmm(p, vh).div_(l)  # [b * Hkv, G, Dv]
    return o.view(b, Hq, Dv), (m + torch.log(l)).view(b, Hq)


class _Workspace:
    """Scratch buffers reused across chunks, items and layers of one plan.

    Why: a fresh multi-MB gather/logits buffer per chunk goes back to the allocator each time;
    measured on CPU (P=8192, n=16, one layer) reusing them takes the prefix pass from ~43 ms
    to ~27 ms.
    """

    def __init__(self) -> None:
        self._bufs: dict[tuple, torch.Tensor] = {}

    def get(self, name: str, shape: tuple[int, ...], like: torch.Tensor) -> torch.Tensor:
        numel = math.prod(shape)
        key = (name, like.dtype, like.device)
        buf = self._bufs.get(key)
        if buf is None or buf.numel() < numel:
            buf = self._bufs[key] = torch.empty(numel, dtype=like.dtype, device=like.device)
        return buf[:numel].view(shape)


def _chunked_attn(
    q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, it: "_ChunkedItem",
    ws: _Workspace,
) -> tuple[torch.Tensor, torch.Tensor]:
    """All ``n`` query rows of one item over its ``L`` keys: online softmax over KV chunks.

    q ``[n, Hq, D]`` float32 (pre-scaled); caches ``[slots, Hkv, D|Dv]``.
    Returns ``o [n, Hq, Dv]``, ``lse [n, Hq]`` (float32, natural log).

    Why chunks: a chunk's gathered K/V (``_KV_CHUNK`` tokens) is still in cache when the two
    matmuls read it, so each prefix token comes from memory once per layer - the point of cascade.
    """
    n, Hq, D = q.shape
    Hkv, Dv = v_cache.shape[1], v_cache.shape[2]
    G = Hq // Hkv
    # Row r of the per-KV-head matrix is (member r // G, query head kvh * G + r % G).
    qh = q.view(n, Hkv, G, D).permute(1, 0, 2, 3).reshape(Hkv, n * G, D)
    chunk = max(64, min(_KV_CHUNK, _LOGITS_BUDGET // max(1, Hkv * n * G)))
    m = l = acc = None
    for ch in it.chunks(chunk):
        if isinstance(ch, tuple):  # consecutive slots: read the pool in place
            kc, vc = k_cache[ch[0] : ch[1]], v_cache[ch[0] : ch[1]]
        else:  # gathered into reused buffers: [c, Hkv, D|Dv]
            c = ch.numel()
            kc = torch.index_select(k_cache, 0, ch, out=ws.get("k", (c, Hkv, D), k_cache))
            vc = torch.index_select(v_cache, 0, ch, out=ws.get("v", (c, Hkv, Dv), v_cache))
        logits = ws.get("logits", (Hkv, n * G, kc.shape[0]), q)  # [Hkv, nG, c]
        torch.bmm(qh, kc.to(torch.float32).permute(1, 2, 0), out=logits)
        m_new = logits.amax(dim=-1) if m is None else torch.maximum(m, logits.amax(dim=-1))
        p = logits.sub_(m_new[..., None]).exp_()  # in place: one exp per logit
        vt = vc.to(torch.float32).permute(1, 0, 2)  # [Hkv, c, Dv]
        if acc is None:
            acc, l = torch.bmm(p, vt), p.sum(dim=-1)  # [Hkv, nG, Dv], [Hkv, nG]
        else:
            alpha = torch.exp(m - m_new)  # rescale what was accumulated under the old max
            acc = acc.mul_(alpha[..., None]).baddbmm_(p, vt)
            l = l.mul_(alpha).add_(p.sum(dim=-1))
        m = m_new
    o = (acc / l[..., None]).view(Hkv, n, G, Dv).permute(1, 0, 2, 3).reshape(n, Hq, Dv)
    lse = (m + torch.log(l)).view(Hkv, n, G).permute(1, 0, 2).reshape(n, Hq)
    return o, lse
