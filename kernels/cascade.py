"""Public cascade API: plan once per batch, run once per layer, on CPU (torch) or GPU (Triton).

LSE base at this interface: natural log. Triton kernels convert from their internal base 2
before anything leaves them (see :mod:`.triton_impl`).
"""

from __future__ import annotations

from typing import Literal

import torch

from .layout import WorkList, make_worklist
from .torch_impl import TorchAttentionLSE, merge_state as _merge_state_torch

Impl = Literal["auto", "torch", "triton"]


def resolve_impl(impl: Impl, device: torch.device) -> Literal["torch", "triton"]:
    """``auto`` picks Triton on CUDA tensors and torch elsewhere."""
    if impl == "auto":
        return "triton" if device.type == "cuda" else "torch"
    if impl not in ("torch", "triton"):
        raise ValueError(f"unknown kernel implementation {impl!r} (expected auto|torch|triton)")
    return impl


def merge_state(
    v_a: torch.Tensor, s_a: torch.Tensor, v_b: torch.Tensor, s_b: torch.Tensor,
    impl: Impl = "auto",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact merge of two attention states over disjoint key sets.

    v ``[N, H, D]``, s ``[N, H]`` float32 LSE, natural log (``-inf`` = empty set).
    Returns ``(v [N, H, D], s [N, H] float32)``.
    """
    if resolve_impl(impl, v_a.device) == "triton":
        from . import triton_impl

        return triton_impl.merge_state(v_a, s_a, v_b, s_b)
    return _merge_state_torch(v_a, s_a, v_b, s_b)


class CascadeDecode:
    """Decode attention of ``B`` query rows over the union of several levels' KV sets.

    ``levels`` are work lists over the same rows (normally ``[prefix, suffix]``); a row may have
    items in some levels only, but each row the caller reads must be covered by one level.
    ``run`` gives, per row, softmax attention over all its KV slots across levels: levels are
    computed with their LSE and merged exactly.
    """

    def __init__(
        self, levels: list[WorkList], num_heads_kv: int, gqa: int, impl: Impl = "auto"
    ):
        device = levels[0].device if levels else torch.device("cpu")
        self.impl = resolve_impl(impl, device)
        if self.impl == "triton":
            from .triton_impl import TritonCascade

            self._triton = TritonCascade(levels, num_heads_kv, gqa)
        else:
            self._torch = [TorchAttentionLSE(lv) for lv in levels if lv.num_items]

    def run(
        self, q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, scale: float
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """q ``[B, Hq, D]``, caches ``[slots, Hkv, D|Dv]``.

        Returns ``o [B, Hq, Dv]`` (float32 on the torch path, q's dtype on Triton) and
        ``lse [B, Hq]`` float32, natural log.
        """
        if self.impl == "triton":
            return self._triton.run(q, k_cache, v_cache, scale)
        o = lse = None
        for lv in self._torch:
            o_l, s_l = lv.run(q, k_cache, v_cache, scale)
            o, lse = (o_l, s_l) if o is None else _merge_state_torch(o, lse, o_l, s_l)
        if o is None:
            B, Hq = q.shape[:2]
            o = q.new_zeros((B, Hq, v_cache.shape[-1]), dtype=torch.float32)
            lse = q.new_full((B, Hq), float("-inf"), dtype=torch.float32)
        return o, lse


def attention_lse(
    q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, work: WorkList,
    scale: float, impl: Impl = "auto",
) -> tuple[torch.Tensor, torch.Tensor]:
    """One level: each item's query rows over its KV slots. Uncovered rows: ``(0, -inf)``."""
    Hkv = k_cache.shape[1]
    return CascadeDecode([work], Hkv, q.shape[1] // Hkv, impl).run(q, k_cache, v_cache, scale)


def grouped_prefix_attention(
    q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor,
    group_rows: list[list[int]], prefix_slots: list[torch.Tensor], scale: float,
    impl: Impl = "auto",
) -> tuple[torch.Tensor, torch.Tensor]:
    """All queries of each group over the group's shared prefix, in one pass per group.

    Args:
        q: ``[B, Hq, D]`` decode queries.  group_rows[g]: rows of q in group g.
        prefix_slots[g]: ``[P_g]`` KV slots of group g's shared prefix.
    Returns:
        ``o [B, Hq, Dv]`` and ``lse [B, Hq]`` (natural log); rows in no group give ``(0, -inf)``.
    """
    work = make_worklist(group_rows, prefix_slots, device=q.device)
    return attention_lse(q, k_cache, v_cache, work, scale, impl)


def suffix_attention(
    q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor,
    suffix_slots: list[torch.Tensor], scale: float, impl: Impl = "auto",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Row ``b`` of q over its own KV slots ``suffix_slots[b]``. Returns ``o``, ``lse`` (ln)."""
    work = make_worklist([[b] for b in range(len(suffix_slots))], suffix_slots, device=q.device)
    return attention_lse(q, k_cache, v_cache, work, scale, impl)
