"""The KV accounting helpers over several DP ranks (no server: fixed blocks)."""

from __future__ import annotations

import asyncio
import types

from sglang_pr.server import kv_accounting
from sglang_pr.server.kv_accounting import combine, is_idle_and_clean


def block(rank, **over):
    clean = {"dp_rank": rank, "total_tokens": 100, "available_tokens": 90, "evictable_tokens": 10,
             "protected_tokens": 0, "running_requests": 0, "waiting_requests": 0,
             "free_req_slots": 8, "total_req_slots": 8, "leak_warnings": 0}
    return {**clean, **over}


def test_combine_sums_counts_and_keeps_ranks_in_order():
    state = combine([block(1, running_requests=2), block(0)])
    assert [r["dp_rank"] for r in state["ranks"]] == [0, 1]
    assert state["total_tokens"] == 200 and state["running_requests"] == 2
    assert combine([block(0)])["ranks"] == [block(0)]  # one rank: its own numbers


def test_idle_and_clean_means_every_rank():
    assert is_idle_and_clean(combine([block(0), block(1)]))
    assert is_idle_and_clean(block(0))  # a bare block, as before
    # rank 1 holds 5 tokens no one frees while rank 0 has 5 spare: the sums would balance out
    leaky = combine([block(0, available_tokens=95), block(1, available_tokens=85)])
    assert leaky["available_tokens"] + leaky["evictable_tokens"] == leaky["total_tokens"]
    assert not is_idle_and_clean(leaky)
    assert not is_idle_and_clean(combine([block(0), block(1, leak_warnings=1)]))
    assert not is_idle_and_clean(combine([block(0), block(1, free_req_slots=7)]))


def test_kv_state_and_wait_read_every_rank(monkeypatch):
    polls = iter([[block(0), block(1, running_requests=1)], [block(0), block(1)]])
    monkeypatch.setattr(kv_accounting, "kv_states", lambda url: next(polls))
    monkeypatch.setattr(kv_accounting.time, "sleep", lambda s: None)
    state = kv_accounting.wait_idle_and_clean("http://x", timeout_s=5)
    assert is_idle_and_clean(state) and len(state["ranks"]) == 2


def test_kv_by_rank_from_the_tokenizer_manager():
    async def get_internal_state():
        return [{"sglang_pr_kv": block(1)}, {"sglang_pr_kv": block(0)}]

    tm = types.SimpleNamespace(get_internal_state=get_internal_state)
    state = asyncio.run(kv_accounting.kv_by_rank(tm))
    assert [r["dp_rank"] for r in state["ranks"]] == [0, 1]
