"""plan_extend: an extend batch's shared spans and per-request rows, on hand-written tables.

The kernel's numbers are checked in tests/kernels/test_extend.py and, through the backend on
SGLang's pools, in tests/cascade/test_backend.py; here only the plan's shape.
"""

from __future__ import annotations

import torch

from sglang_pr.cascade.config import CascadeConfig
from sglang_pr.cascade.extend import plan_extend

STALE = 9999


def _table(rows: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    rt = torch.full((len(rows) + 1, max(map(len, rows)) + 4), STALE, dtype=torch.int32)
    for i, r in enumerate(rows):
        rt[i + 1, : len(r)] = torch.tensor(r, dtype=torch.int32)
    return rt, torch.arange(1, len(rows) + 1)


def test_fork_of_a_cached_prompt_is_one_group_over_the_prompt():
    prompt = list(range(100, 140))
    rows = [prompt + [200 + b] for b in range(4)]  # each branch extends one token
    rt, idx = _table(rows)
    ext = plan_extend(rt, idx, [40] * 4, [1] * 4, CascadeConfig(min_prefix_tokens=8))
    assert ext.groups == [4]
    seg = ext.plan.segments[0]
    assert (seg.start, seg.end) == (0, 40)  # the cached prompt, never a branch's new token
    assert ext.plan.suffix_start == [40] * 4


def test_new_tokens_are_never_shared_and_short_or_lone_prefixes_stay_own():
    # Rows 0-1 share 20 cached tokens and extend the same 3 slots' worth of new tokens in
    # different slots; row 2 shares only 5 tokens with them (< min_prefix_tokens); row 3 is a
    # plain prefill (prefix 0).
    shared = list(range(20))
    rows = [shared + [50, 51, 52], shared + [60, 61, 62], shared[:5] + [70, 71],
            [80, 81, 82, 83]]
    rt, idx = _table(rows)
    ext = plan_extend(rt, idx, [20, 20, 5, 0], [3, 3, 2, 4], CascadeConfig(min_prefix_tokens=8))
    assert [(s.rows, s.start, s.end) for s in ext.plan.segments] == [((0, 1), 0, 20)]
    assert ext.plan.suffix_start == [20, 20, 0, 0]


def test_cached_prefixes_of_different_lengths_share_up_to_the_shorter():
    base = list(range(64))
    rows = [base[:32] + [300], base + [301, 302]]
    rt, idx = _table(rows)
    ext = plan_extend(rt, idx, [32, 64], [1, 2], CascadeConfig(min_prefix_tokens=16))
    assert [(s.rows, s.start, s.end) for s in ext.plan.segments] == [((0, 1), 0, 32)]
