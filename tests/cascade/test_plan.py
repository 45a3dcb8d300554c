"""The per-batch plan (shared KV segments) on hand-written req_to_token tables."""

from __future__ import annotations

import torch

from sglang_pr.cascade.config import CascadeConfig
from sglang_pr.cascade.plan import build_plan


def _table(rows: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
    width = max(map(len, rows)) + 4
    rt = torch.full((len(rows) + 1, width), 9999, dtype=torch.int32)  # 9999: stale entries
    for i, r in enumerate(rows):
        rt[i + 1, : len(r)] = torch.tensor(r, dtype=torch.int32)
    return rt, torch.arange(1, len(rows) + 1), [len(r) for r in rows]


def test_docstring_example():
    rt, idx, lens = _table([
        [7, 8, 9, 4, 5, 60, 61],
        [7, 8, 9, 4, 5, 70],
        [7, 8, 9, 4, 5, 80, 81, 82],
        [7, 8, 9, 4, 5, 60, 62, 90],
        [3, 1, 2],
    ])
    plan = build_plan(rt, idx, lens, CascadeConfig(min_prefix_tokens=3))
    assert [(s.rows, s.start, s.end, s.level) for s in plan.segments] == [((0, 1, 2, 3), 0, 5, 0)]
    assert plan.suffix_start == [5, 5, 5, 5, 0]
    assert plan.flat_rows == [4] and plan.grouped_rows == [0, 1, 2, 3]
    assert plan.kv_tokens() == (7 + 6 + 8 + 8 + 3, 5 + 2 + 1 + 3 + 3 + 3)
    # With a 1-token threshold the fork of a fork becomes a second level.
    deep = build_plan(rt, idx, lens, CascadeConfig(min_prefix_tokens=1))
    assert [(s.rows, s.start, s.end, s.level) for s in deep.segments] == [
        ((0, 1, 2, 3), 0, 5, 0), ((0, 3), 5, 6, 1)]
    assert deep.suffix_start == [6, 5, 5, 6, 0]


def test_worklists_cover_every_token_once():
    rt, idx, lens = _table([
        [1, 2, 3, 4, 10, 11], [1, 2, 3, 4, 20], [1, 2, 3, 4, 30, 31, 32], [5, 6],
    ])
    plan = build_plan(rt, idx, lens, CascadeConfig(min_prefix_tokens=2))
    levels = plan.worklists()
    per_row: dict[int, list[int]] = {b: [] for b in range(4)}
    for lv in levels:
        qp, kp = lv.qo_indptr.tolist(), lv.kv_indptr.tolist()
        for w in range(lv.num_items):
            for r in lv.qo_rows[qp[w] : qp[w + 1]].tolist():
                per_row[r] += lv.kv_indices[kp[w] : kp[w + 1]].tolist()
    for b in range(4):
        assert per_row[b] == rt[b + 1, : lens[b]].tolist()
    # The CPU path asks for the suffix level of grouped rows only.
    assert plan.worklists(plan.grouped_rows)[-1].num_items == 3


def test_a_rows_last_token_is_never_shared():
    # The same pool row twice in a batch (cannot happen in SGLang, but must not break exactness).
    rt, _, _ = _table([[1, 2, 3, 4, 5, 6]])
    plan = build_plan(rt, torch.tensor([1, 1]), [6, 6], CascadeConfig(min_prefix_tokens=2))
    assert [(s.start, s.end) for s in plan.segments] == [(0, 5)]
    assert plan.suffix_start == [5, 5]


def test_no_groups_below_thresholds_or_for_unrelated_rows():
    rt, idx, lens = _table([[1, 2, 3, 9], [1, 2, 3, 8], [4, 5, 6, 7]])
    assert build_plan(rt, idx, lens, CascadeConfig(min_prefix_tokens=4)).segments == []
    assert build_plan(rt, idx, lens, CascadeConfig(min_prefix_tokens=3)).segments != []
    only_two = CascadeConfig(min_prefix_tokens=1, min_group_size=3)
    assert build_plan(rt, idx, lens, only_two).segments == []
    rt1, idx1, lens1 = _table([[1]])
    assert build_plan(rt1, idx1, lens1, CascadeConfig()).segments == []  # one token, no prefix


def test_stale_entries_beyond_seq_len_are_ignored():
    # Both rows continue with the same stale value 9999 beyond their lengths; a shared span
    # must stop at the shorter row's last own token, not run into the stale tail.
    rt, idx, lens = _table([[1, 2, 3, 4, 50], [1, 2, 3, 4, 60, 61, 62]])
    plan = build_plan(rt, idx, lens, CascadeConfig(min_prefix_tokens=1))
    assert [(s.start, s.end) for s in plan.segments] == [(0, 4)]
