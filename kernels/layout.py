"""Work-list layout shared by every attention kernel in this package (FlashInfer-style CSR).

A *work item* attends a set of query rows to a set of KV slots, non-causally (decode: every
query sees every listed key). Both cascade levels are work lists:

* prefix level - one item per fork group: all members' queries over the group's shared prefix;
* suffix level - one item per request: its one query over its own (unshared) tokens.

Item ``w`` covers::

    query rows  qo_rows[qo_indptr[w] : qo_indptr[w + 1]]      (rows of q, all heads of each row)
    KV slots    kv_indices[kv_indptr[w] : kv_indptr[w + 1]]   (token slots of the KV pool)

KV slots are SGLang token slots: rows of the pool buffers ``k_cache[slot]`` of shape
``[Hkv, D]``. SGLang's ``req_to_token`` table is token-granular for every page size (with page
size ``p`` a page holds the ``p`` consecutive slots ``page_id * p + (0 .. p-1)``), so one layout
serves page size 1 and > 1 alike.

Worked example (page size 1). A decode batch of 4 requests; requests 0, 1 and 3 are branches
forked from one 5-token prompt whose KV sits in slots 10..14; request 2 is unrelated::

    req_to_token rows (first seq_len entries):
      req 0: 10 11 12 13 14 20 21        seq_len 7
      req 1: 10 11 12 13 14 30           seq_len 6
      req 2: 50 51 52                    seq_len 3
      req 3: 10 11 12 13 14 40 41 42     seq_len 8

    prefix level (1 group):  qo_indptr [0, 3]  qo_rows [0, 1, 3]
                             kv_indptr [0, 5]  kv_indices [10 11 12 13 14]
    suffix level (4 items):  qo_indptr [0, 1, 2, 3, 4]  qo_rows [0, 1, 2, 3]
                             kv_indptr [0, 2, 3, 6, 9]
                             kv_indices [20 21 | 30 | 50 51 52 | 40 41 42]

The prefix level reads 5 slots once instead of 3 times; request 2 (no group) attends its whole
sequence at the suffix level and has no prefix state (LSE = -inf, which the merge ignores).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class WorkList:
    """CSR description of attention work items; all index tensors int32 on one device.

    Attributes:
        qo_indptr: ``[W + 1]`` int32, offsets into ``qo_rows``.
        qo_rows: ``[R]`` int32, row of ``q`` (and of the outputs) for each query of each item.
        kv_indptr: ``[W + 1]`` int32, offsets into ``kv_indices``.
        kv_indices: ``[N]`` int32, KV pool token slots.
        qo_lens / kv_lens: host copies of the per-item lengths (Python ints), kept so that host
            code (CPU path, launch-grid sizing) never syncs with the device.
    """

    qo_indptr: torch.Tensor
    qo_rows: torch.Tensor
    kv_indptr: torch.Tensor
    kv_indices: torch.Tensor
    qo_lens: tuple[int, ...]
    kv_lens: tuple[int, ...]

    @property
    def num_items(self) -> int:
        return len(self.qo_lens)

    @property
    def max_qo_len(self) -> int:
        return max(self.qo_lens, default=0)

    @property
    def max_kv_len(self) -> int:
        return max(self.kv_lens, default=0)

    @property
    def device(self) -> torch.device:
        return self.kv_indices.device

    def kv_tokens_read(self) -> int:
        """KV tokens this level reads once per layer (each item reads its slots once)."""
        return sum(self.kv_lens)


def _indptr(lens: list[int], device) -> torch.Tensor:
    out = torch.zeros(len(lens) + 1, dtype=torch.int32)
    if lens:
        out[1:] = torch.cumsum(torch.tensor(lens, dtype=torch.int64), 0)
    return out.to(device)


def make_worklist(
    qo_rows: list[list[int]],
    kv_slots: list[torch.Tensor],
    device: torch.device | str | None = None,
) -> WorkList:
    """Build a :class:`WorkList` from per-item row lists and per-item slot tensors.

    Args:
        qo_rows: for each item, the query rows it owns (a row may appear in one item per level).
        kv_slots: for each item, a 1-D integer tensor of KV slots (any int dtype, any device).
        device: where the index tensors live (default: the device of the first slot tensor).
    """
    if len(qo_rows) != len(kv_slots):
        raise ValueError(f"{len(qo_rows)} query-row lists but {len(kv_slots)} KV slot lists")
    if device is None:
        device = kv_slots[0].device if kv_slots else "cpu"
    qo_lens = [len(r) for r in qo_rows]
    kv_lens = [int(s.numel()) for s in kv_slots]
    flat_rows = [r for rows in qo_rows for r in rows]
    kv = (
        torch.cat([s.reshape(-1).to(device=device, dtype=torch.int32) for s in kv_slots])
        if kv_slots
        else torch.zeros(0, dtype=torch.int32, device=device)
    )
    return WorkList(
        qo_indptr=_indptr(qo_lens, device),
        qo_rows=torch.tensor(flat_rows, dtype=torch.int32, device=device),
        kv_indptr=_indptr(kv_lens, device),
        kv_indices=kv,
        qo_lens=tuple(qo_lens),
        kv_lens=tuple(kv_lens),
    )
