"""Random fork-group decode scenarios over a paged KV pool (for tests and benchmarks).

A scenario is what a decode step of SGLang looks like after forks: ``groups`` prompts of
``prefix_len`` tokens, each forked into ``branches`` requests with their own suffixes, plus
``ungrouped`` unrelated requests. KV lives in a pool of pages of ``page_size`` token slots,
handed out in random order (as a long-running allocator does), and every request is a list of
token slots - exactly SGLang's ``req_to_token`` view.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .layout import WorkList, make_worklist


@dataclass
class ForkScenario:
    q: torch.Tensor  # [B, Hq, D]
    k_cache: torch.Tensor  # [num_slots, Hkv, D]
    v_cache: torch.Tensor  # [num_slots, Hkv, D]
    req_slots: list[torch.Tensor]  # per request: all its KV slots (prefix + own), int64
    group_rows: list[list[int]]  # per group: its batch rows
    prefix_slots: list[torch.Tensor]  # per group: the shared prefix's slots
    suffix_slots: list[torch.Tensor]  # per request: slots after its group's prefix (all if none)
    scale: float

    def levels(self) -> list[WorkList]:
        """``[prefix level, suffix level]`` work lists on the scenario's device."""
        dev = self.q.device
        prefix = make_worklist(self.group_rows, self.prefix_slots, device=dev)
        suffix = make_worklist([[b] for b in range(len(self.req_slots))], self.suffix_slots, dev)
        return [prefix, suffix]

    def flat(self) -> WorkList:
        """One item per request over its whole KV (what flat decode attention reads)."""
        rows = [[b] for b in range(len(self.req_slots))]
        return make_worklist(rows, self.req_slots, self.q.device)


class _PagedAllocator:
    """Hands out token slots page by page from a shuffled page list."""

    def __init__(self, num_tokens: int, page_size: int, gen: torch.Generator):
        self.num_pages = -(-num_tokens // page_size) + 1
        self.pages = torch.randperm(self.num_pages, generator=gen).tolist()
        self.page_size = page_size

    def take(self, n: int) -> torch.Tensor:
        """``n`` slots starting on a fresh page (int64)."""
        out = []
        while len(out) < n:
            page = self.pages.pop()
            base = page * self.page_size
            out.extend(range(base, base + min(self.page_size, n - len(out))))
        return torch.tensor(out, dtype=torch.int64)


def make_scenario(
    groups: int = 1,
    branches: int = 4,
    prefix_len: int = 64,
    suffix_len: int = 8,
    num_heads: int = 8,
    num_kv_heads: int = 2,
    head_dim: int = 32,
    page_size: int = 1,
    ungrouped: int = 0,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
    seed: int = 0,
    vary_suffix: bool = True,
) -> ForkScenario:
    """Build a scenario; suffix lengths vary per branch when ``vary_suffix`` (``suffix_len``,
    ``suffix_len - 1``, ``suffix_len - 2``, at least 1) and ungrouped requests get
    ``prefix_len + suffix_len`` tokens of their own.

    Rows are interleaved (group members are not contiguous in the batch), as in SGLang batches.
    """
    gen = torch.Generator().manual_seed(seed)
    sfx = [max(1, suffix_len - (b % 3 if vary_suffix else 0)) for b in range(branches)]
    # Tokens to allocate, with a page of rounding slack per allocation.
    total = groups * (prefix_len + page_size + sum(s + page_size for s in sfx))
    total += ungrouped * (prefix_len + suffix_len + page_size)
    alloc = _PagedAllocator(total, page_size, gen)
    prefix_slots = [alloc.take(prefix_len) for _ in range(groups)]
    # Batch row order: branch-major, so members of one group are spread over the batch.
    members = [(g, b) for b in range(branches) for g in range(groups)]
    n_rows = len(members) + ungrouped
    order = torch.randperm(n_rows, generator=gen).tolist()
    group_rows: list[list[int]] = [[] for _ in range(groups)]
    req_slots: list[torch.Tensor | None] = [None] * n_rows
    suffix_slots: list[torch.Tensor | None] = [None] * n_rows
    for i, (g, b) in enumerate(members):
        row = order[i]
        own = alloc.take(sfx[b])
        group_rows[g].append(row)
        suffix_slots[row] = own
        req_slots[row] = torch.cat([prefix_slots[g], own])
    for i in range(ungrouped):
        row = order[len(members) + i]
        own = alloc.take(prefix_len + suffix_len)
        suffix_slots[row], req_slots[row] = own, own
    kv_shape = (alloc.num_pages * page_size, num_kv_heads, head_dim)
    k_cache = torch.randn(kv_shape, generator=gen).to(dtype)
    v_cache = torch.randn(kv_shape, generator=gen).to(dtype)
    q = torch.randn((n_rows, num_heads, head_dim), generator=gen).to(dtype)
    return ForkScenario(
        q=q.to(device),
        k_cache=k_cache.to(device),
        v_cache=v_cache.to(device),
        req_slots=req_slots,
        group_rows=group_rows,
        prefix_slots=prefix_slots,
        suffix_slots=suffix_slots,
        scale=head_dim**-0.5,
    )
