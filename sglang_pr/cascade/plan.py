"""Per-batch plan: which running requests share which KV spans (built once per decode batch).

Requests forked from one prompt hit the same radix-cache nodes, so the leading entries of their
``req_to_token`` rows hold the *same KV slots*. The plan finds those shared spans straight from
the table - no scheduler state needed - which also makes it robust to anything that changes the
batch between steps (requests finishing, DeepConf early stops, aborts, newcomers): it is rebuilt
from scratch every batch.

Worked example (``min_prefix_tokens=3``, ``min_group_size=2``; slots shown per position)::

    row 0: 7 8 9 4 5 | 60 61        rows 0-3 are branches of one 5-token prompt (slots
    row 1: 7 8 9 4 5 | 70           7 8 9 4 5); rows 0 and 3 also share slot 60 (a fork
    row 2: 7 8 9 4 5 | 80 81 82     of a fork). A row's last slot is the token being
    row 3: 7 8 9 4 5 | 60 62 90     decoded: its own, never shared.
    row 4: 3 1 2                    (an unrelated request)

    segments: level 0  rows (0, 1, 2, 3)  positions [0, 5)
              (rows 0 and 3 share 1 more token: < min_prefix_tokens, so not a segment)
    suffix_start: [5, 5, 5, 5, 0]   -> row 4 is flat (in no segment)

Nested forks give nested segments on deeper levels (a system prompt shared by everybody on
level 0, each question's prompt shared by its branches on level 1); a row is in at most one
segment per level, so each level is one work list for the kernels.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from sglang_pr.kernels import WorkList, make_worklist

from .config import CascadeConfig


@dataclass(frozen=True)
class Segment:
    """KV positions ``[start, end)`` shared (same slots) by batch ``rows``; cascade ``level``."""

    rows: tuple[int, ...]
    start: int
    end: int
    level: int


@dataclass
class CascadePlan:
    """Shared segments of one decode batch plus where each row's own tokens begin."""

    segments: list[Segment]
    suffix_start: list[int]  # per batch row; 0 = the row is in no segment (flat)
    seq_lens: list[int]
    table: torch.Tensor  # [B, max_len] int32: the batch's req_to_token rows

    @property
    def num_levels(self) -> int:
        return 1 + max((s.level for s in self.segments), default=-1)

    @property
    def grouped_rows(self) -> list[int]:
        return [b for b, s in enumerate(self.suffix_start) if s > 0]

    @property
    def flat_rows(self) -> list[int]:
        return [b for b, s in enumerate(self.suffix_start) if s == 0]

    def kv_tokens(self) -> tuple[int, int]:
        """KV tokens read per layer: ``(flat attention, this plan)`` over the whole batch."""
        flat = sum(self.seq_lens)
        shared = sum(s.end - s.start for s in self.segments)
        own = sum(n - s for n, s in zip(self.seq_lens, self.suffix_start))
        return flat, shared + own

    def worklists(self, rows: list[int] | None = None) -> list[WorkList]:
        """Segment levels then the suffix level, as kernel work lists (on the table's device).

        ``rows`` limits the suffix level to those batch rows (default: all rows); segment levels
        always list their own rows.
        """
        rows = range(len(self.seq_lens)) if rows is None else rows
        levels = []
        for lv in range(self.num_levels):
            segs = [s for s in self.segments if s.level == lv]
            levels.append(
                make_worklist(
                    [list(s.rows) for s in segs],
                    [self.table[s.rows[0], s.start : s.end] for s in segs],
                    device=self.table.device,
                )
            )
        levels.append(
            make_worklist(
                [[b] for b in rows],
                [self.table[b, self.suffix_start[b] : self.seq_lens[b]] for b in rows],
                device=self.table.device,
            )
        )
        return levels


def _first_mismatch(tab: torch.Tensor, rows: list[int], lo: int, hi: int) -> int:
    """First position in ``[lo, hi)`` where ``rows`` of ``tab`` hold different slots, else hi."""
    if hi <= lo:
        return max(lo, hi)
    sub = tab[rows, lo:hi]  # [n, hi - lo]
    same = (sub == sub[:1]).all(dim=0)
    if bool(same.all()):
        return hi
    return lo + int((~same).to(torch.int32).argmax())


def _partition(tab: torch.Tensor, rows: list[int], pos: int) -> list[list[int]]:
    keys = tab[rows, pos].tolist()
    parts: dict[int, list[int]] = {}
    for r, k in zip(rows, keys):
        parts.setdefault(k, []).append(r)
    return list(parts.values())


def build_plan(
    req_to_token: torch.Tensor,
    req_pool_indices: torch.Tensor,
    seq_lens: list[int],
    cfg: CascadeConfig,
) -> CascadePlan:
    """Find shared KV segments among a decode batch.

    Args:
        req_to_token: ``[max_reqs, max_context]`` int32, SGLang's request-to-token-slot table.
        req_pool_indices: ``[B]`` the batch's rows of that table.
        seq_lens: ``B`` KV lengths *including* the token being decoded (its slot is the row's
            own, so a segment never includes a row's last position).
        cfg: the cost rule (``min_prefix_tokens``, ``min_group_size``).
    """
    B = len(seq_lens)
    max_len = max(seq_lens, default=0)
    tab = req_to_token[req_pool_indices.long(), :max_len]  # [B, max_len]
    segments: list[Segment] = []
    suffix_start = [0] * B
    # Explicit stack (not recursion): chains of short shared spans can be long.
    # Entry: (rows sharing positions [0, common), first position not yet in a segment, level).
    stack = [([b for b in range(B) if seq_lens[b] >= 2], 0, 0, 0)]
    while stack:
        rows, emitted, common, level = stack.pop()
        if len(rows) < cfg.min_group_size:
            continue
        limit = min(seq_lens[r] for r in rows) - 1  # never share a row's last (own) token
        end = _first_mismatch(tab, rows, common, limit)
        if end - emitted >= cfg.min_prefix_tokens:
            segments.append(Segment(tuple(rows), emitted, end, level))
            emitted, level = end, level + 1
            for r in rows:
                suffix_start[r] = end
        longer = [r for r in rows if seq_lens[r] - 1 > end]
        if len(longer) >= cfg.min_group_size:
            for part in _partition(tab, longer, end):
                stack.append((part, emitted, end + 1, level))
    segments.sort(key=lambda s: (s.level, s.rows))
    return CascadePlan(segments, suffix_start, list(seq_lens), tab)
