"""GPU path: Triton kernels with the same semantics as :mod:`.torch_impl`.

* ``_worklist_attn_kernel`` - attention of a work item's query rows over its KV slots, split
  along the KV axis (split-K) so that a handful of long-prefix groups still fills the GPU. It
  writes one partial state per split into a stack ``[S_total, B, Hq, Dv]`` / ``[S_total, B, Hq]``.
* ``_merge_states_kernel`` - exact LSE merge of the ``S_total`` partial states of each row. The
  prefix level and the suffix level of a cascade write disjoint slices of the same stack, so one
  merge finishes both the split-K reduction and the cascade merge.
* ``_merge_state_kernel`` - the two-state merge (FlashInfer's ``merge_state``).

LSE base: the kernels work in base 2 internally (``exp2``; logits are pre-multiplied by
``log2(e)``) and convert to natural log when they store an LSE (``* ln 2``) and back when they
load one (``* log2(e)``). Every LSE in a tensor that leaves this module is natural log.

Under ``TRITON_INTERPRET=1`` (set before triton is imported) the same kernels run on CPU
tensors; tests use that to check them on a machine without a GPU.
"""

from __future__ import annotations


import torch
import triton
import triton.language as tl

from .layout import WorkList

_LOG2E = 1.4426950408889634


@triton.jit
def _worklist_attn_kernel(
    Q, K, V, O_part, LSE_part,
    qo_indptr, qo_rows, kv_indptr, kv_indices,
    scale_log2, split_base, chunk_len, m_tiles,
    stride_qb, stride_qh, stride_kt, stride_kh, stride_vt, stride_vh,
    stride_os, stride_ob, stride_oh, stride_ls, stride_lb,
    GQA: tl.constexpr, D: tl.constexpr, DV: tl.constexpr,
    BLOCK_D: tl.constexpr, BLOCK_DV: tl.constexpr, BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr, IEEE: tl.constexpr,
):
    # m_tiles is a runtime value (not constexpr) and BLOCK_M takes only 16, 32 or 64 (chosen
    # per level, see TritonCascade): group sizes change from batch to batch as branches stop,
    # and at most three compiled variants serve them all.
    w = tl.program_id(0)
    kvh = tl.program_id(1) // m_tiles
    m_tile = tl.program_id(1) % m_tiles
    split = tl.program_id(2)
    qo_lo = tl.load(qo_indptr + w)
    n_rows = tl.load(qo_indptr + w + 1) - qo_lo
    kv_lo = tl.load(kv_indptr + w)
    kv_hi = tl.load(kv_indptr + w + 1)
    lo = kv_lo + split * chunk_len
    hi = tl.minimum(kv_hi, lo + chunk_len)
    if (m_tile * BLOCK_M < n_rows * GQA) & (lo < hi):
        # Tile row t is (member t // GQA, query head kvh * GQA + t % GQA): all query heads that
        # share KV head kvh, for all members, see each loaded K/V tile once.
        t = m_tile * BLOCK_M + tl.arange(0, BLOCK_M)
        t_ok = t < n_rows * GQA
        row = tl.load(qo_rows + qo_lo + t // GQA, mask=t_ok, other=0).to(tl.int64)
        head = kvh * GQA + t % GQA
        d = tl.arange(0, BLOCK_D)
        dv = tl.arange(0, BLOCK_DV)
        q = tl.load(
            Q + row[:, None] * stride_qb + head[:, None] * stride_qh + d[None, :],
            mask=t_ok[:, None] & (d[None, :] < D), other=0.0,
        )
        m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
        l_i = tl.zeros([BLOCK_M], tl.float32)
        acc = tl.zeros([BLOCK_M, BLOCK_DV], tl.float32)
        for start in range(lo, hi, BLOCK_N):
            n_idx = start + tl.arange(0, BLOCK_N)
            n_ok = n_idx < hi
            slot = tl.load(kv_indices + n_idx, mask=n_ok, other=0).to(tl.int64)
            k = tl.load(
                K + slot[:, None] * stride_kt + kvh * stride_kh + d[None, :],
                mask=n_ok[:, None] & (d[None, :] < D), other=0.0,
            )
            v = tl.load(
                V + slot[:, None] * stride_vt + kvh * stride_vh + dv[None, :],
                mask=n_ok[:, None] & (dv[None, :] < DV), other=0.0,
            )
            if IEEE:
                s = tl.dot(q, tl.trans(k), input_precision="ieee")
            else:
                s = tl.dot(q, tl.trans(k))
            s = tl.where(n_ok[None, :], s * scale_log2, float("-inf"))
            m_new = tl.maximum(m_i, tl.max(s, 1))
            alpha = tl.exp2(m_i - m_new)
            p = tl.exp2(s - m_new[:, None])
            l_i = l_i * alpha + tl.sum(p, 1)
            if IEEE:
                pv = tl.dot(p, v.to(tl.float32), input_precision="ieee")
            else:
                pv = tl.dot(p.to(v.dtype), v)
            acc = acc * alpha[:, None] + pv
            m_i = m_new
        o = acc / l_i[:, None]
        lse = (m_i + tl.log2(l_i)) * 0.6931471805599453  # base 2 -> natural log
        sp = split_base + split
        tl.store(
            O_part + sp * stride_os + row[:, None] * stride_ob + head[:, None] * stride_oh
            + dv[None, :],
            o, mask=t_ok[:, None] & (dv[None, :] < DV),
        )
        tl.store(LSE_part + sp * stride_ls + row * stride_lb + head, lse, mask=t_ok)


@triton.jit
def _merge_states_kernel(
    V_part, S_part, O, LSE, num_states, num_heads,
    stride_vs, stride_vb, stride_vh, stride_ss, stride_sb,
    stride_ob, stride_oh, stride_lb,
    DV: tl.constexpr, BLOCK_DV: tl.constexpr, BLOCK_S: tl.constexpr,
):
    b = tl.program_id(0) // num_heads
    h = tl.program_id(0) % num_heads
    si = tl.arange(0, BLOCK_S)
    s_ok = si < num_states
    s = tl.load(S_part + si * stride_ss + b * stride_sb + h, mask=s_ok, other=float("-inf"))
    s2 = s * 1.4426950408889634  # natural log -> base 2
    m = tl.max(s2, 0)
    m_safe = tl.where(m == float("-inf"), 0.0, m)
    wgt = tl.exp2(s2 - m_safe)  # 0 for empty states (-inf) and padding
    denom = tl.sum(wgt, 0)
    dv = tl.arange(0, BLOCK_DV)
    v = tl.load(
        V_part + si[:, None] * stride_vs + b * stride_vb + h * stride_vh + dv[None, :],
        mask=s_ok[:, None] & (wgt[:, None] > 0) & (dv[None, :] < DV), other=0.0,
    )
    inv = tl.where(denom > 0, 1.0 / denom, 0.0)
    o = tl.sum(v.to(tl.float32) * wgt[:, None], 0) * inv
    tl.store(O + b * stride_ob + h * stride_oh + dv, o.to(O.dtype.element_ty), mask=dv < DV)
    lse = (m_safe + tl.log2(denom)) * 0.6931471805599453
    tl.store(LSE + b * stride_lb + h, lse)


@triton.jit
def _merge_state_kernel(
    VA, SA, VB, SB, VO, SO, N, D: tl.constexpr, BLOCK_D: tl.constexpr,
):
    i = tl.program_id(0)  # flattened (row, head)
    d = tl.arange(0, BLOCK_D)
    sa = tl.load(SA + i) * 1.4426950408889634
    sb = tl.load(SB + i) * 1.4426950408889634
    m = tl.maximum(sa, sb)
    m_safe = tl.where(m == float("-inf"), 0.0, m)
    wa = tl.exp2(sa - m_safe)
    wb = tl.exp2(sb - m_safe)
    denom = wa + wb
    inv = tl.where(denom > 0, 1.0 / denom, 0.0)
    va = tl.load(VA + i * D + d, mask=d < D, other=0.0).to(tl.float32)
    vb = tl.load(VB + i * D + d, mask=d < D, other=0.0).to(tl.float32)
    o = (va * wa + vb * wb) * inv
    tl.store(VO + i * D + d, o.to(VO.dtype.element_ty), mask=d < D)
    tl.store(SO + i, (m_safe + tl.log2(denom)) * 0.6931471805599453)


def merge_state(
    v_a: torch.Tensor, s_a: torch.Tensor, v_b: torch.Tensor, s_b: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Triton twin of :func:`.torch_impl.merge_state`. v ``[N, H, D]``, s ``[N, H]`` natural log.

    Returns ``(v [N, H, D] in v_a's dtype, s [N, H] float32)``.
    """
    N, H, D = v_a.shape
    v_a, v_b = v_a.contiguous(), v_b.contiguous()
    s_a, s_b = s_a.float().contiguous(), s_b.float().contiguous()
    v_o = torch.empty_like(v_a)
    s_o = torch.empty((N, H), dtype=torch.float32, device=v_a.device)
    if N * H:
        _merge_state_kernel[(N * H,)](
            v_a, s_a, v_b, s_b, v_o, s_o, N, D=D, BLOCK_D=triton.next_power_of_2(D)
        )
    return v_o, s_o


def _num_sms(device: torch.device) -> int:
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).multi_processor_count
    return 4  # interpreter: few splits keep CPU emulation fast yet still exercise split-K


class TritonCascade:
    """Plan once per batch, run once per layer: levels of work lists, one merged output.

    ``levels`` are work lists over the same query rows (e.g. ``[prefix, suffix]``); every row of
    ``q`` must be covered by at least one level. ``run`` returns the exact attention of each row
    over the union of its KV sets across levels.
    """

    BLOCK_N = 32
    # Query rows per tile, per level: tl.dot needs >= 16; up to 64 so that a fork group's
    # n * GQA rows (64 for 16 branches at GQA 4) share one tile and the prefix is read once
    # per KV head and split, not once per 16 rows.
    MIN_BLOCK_M, MAX_BLOCK_M = 16, 64

    def __init__(self, levels: list[WorkList], num_heads_kv: int, gqa: int):
        self.levels = [lv for lv in levels if lv.num_items]
        sms = _num_sms(self.levels[0].device) if self.levels else 1
        self.launch = []  # (worklist, block_m, m_tiles, splits, chunk_len, split_base)
        base = 0
        for lv in self.levels:
            rows = lv.max_qo_len * gqa
            block_m = min(self.MAX_BLOCK_M, max(self.MIN_BLOCK_M, triton.next_power_of_2(rows)))
            m_tiles = triton.cdiv(rows, block_m)
            blocks = triton.cdiv(max(lv.max_kv_len, 1), self.BLOCK_N)
            ctas = lv.num_items * num_heads_kv * m_tiles
            # Enough splits for ~2 waves of CTAs, never more than there are KV blocks.
            splits = max(1, min(blocks, triton.cdiv(2 * sms, ctas)))
            chunk = triton.cdiv(blocks, splits) * self.BLOCK_N
            splits = triton.cdiv(max(lv.max_kv_len, 1), chunk)
            self.launch.append((lv, block_m, m_tiles, splits, chunk, base))
            base += splits
        self.num_states = base
        self.gqa = gqa  # the tiles above were sized for it (checked in run)
        self._parts: tuple | None = None  # (key, o_part, s_part), see _partials

    def _partials(self, B: int, Hq: int, Dv: int, device) -> tuple[torch.Tensor, torch.Tensor]:
        """The split-state stack ``[S, B, Hq, Dv]`` / ``[S, B, Hq]``, made once per plan.

        Why once: the plan fixes which (split, row, head) entries have keys, so every layer's
        run overwrites exactly the same entries and the rest stay ``(0, -inf)``; zero-filling
        it again per layer would cost two launches and a write of the whole stack.
        """
        key = (B, Hq, Dv, torch.device(device))
        if self._parts is None or self._parts[0] != key:
            o_part = torch.zeros((self.num_states, B, Hq, Dv), dtype=torch.float32, device=device)
            s_part = torch.full((self.num_states, B, Hq), float("-inf"), dtype=torch.float32,
                                device=device)
            self._parts = (key, o_part, s_part)
        return self._parts[1], self._parts[2]

    def run(
        self, q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, scale: float
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """q ``[B, Hq, D]``; caches ``[slots, Hkv, D|Dv]`` (last dim contiguous).

        Returns ``o [B, Hq, Dv]`` (q's dtype) and ``lse [B, Hq]`` float32, natural log.
        """
        B, Hq, D = q.shape
        Hkv, Dv = v_cache.shape[1], v_cache.shape[2]
        gqa = Hq // Hkv
        if gqa != self.gqa:
            raise ValueError(f"plan made for GQA {self.gqa}, run with {Hq} / {Hkv} heads")
        q = q.contiguous()
        o_part, s_part = self._partials(B, Hq, Dv, q.device)
        ieee = q.dtype == torch.float32
        for lv, block_m, m_tiles, splits, chunk, base in self.launch:
            _worklist_attn_kernel[(lv.num_items, Hkv * m_tiles, splits)](
                q, k_cache, v_cache, o_part, s_part,
                lv.qo_indptr, lv.qo_rows, lv.kv_indptr, lv.kv_indices,
                scale * _LOG2E, base, chunk, m_tiles,
                q.stride(0), q.stride(1), k_cache.stride(0), k_cache.stride(1),
                v_cache.stride(0), v_cache.stride(1),
                o_part.stride(0), o_part.stride(1), o_part.stride(2),
                s_part.stride(0), s_part.stride(1),
                GQA=gqa, D=D, DV=Dv, BLOCK_D=triton.next_power_of_2(D),
                BLOCK_DV=triton.next_power_of_2(Dv), BLOCK_M=block_m,
                BLOCK_N=self.BLOCK_N, IEEE=ieee,
            )
        o = torch.empty((B, Hq, Dv), dtype=q.dtype, device=q.device)
        lse = torch.empty((B, Hq), dtype=torch.float32, device=q.device)
        _merge_states_kernel[(B * Hq,)](
            o_part, s_part, o, lse, self.num_states, Hq,
            o_part.stride(0), o_part.stride(1), o_part.stride(2),
            s_part.stride(0), s_part.stride(1), o.stride(0), o.stride(1), lse.stride(0),
            DV=Dv, BLOCK_DV=triton.next_power_of_2(Dv),
            BLOCK_S=max(2, triton.next_power_of_2(self.num_states)),
        )
        return o, lse

