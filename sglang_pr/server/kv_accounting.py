"""SGLang's own KV memory accounting, readable over HTTP.

SGLang's scheduler already checks, whenever it is idle, that every KV slot is either free in
the allocator or held (evictable) by the radix cache, and counts a violation as a leak warning.
This module adds those numbers to the scheduler's internal state, which SGLang serves at
``GET /server_info`` under ``internal_states[i]["sglang_pr_kv"]``, so tests and benchmarks can
assert "no leak" with SGLang's numbers rather than our own bookkeeping.
"""

from __future__ import annotations

import time

import requests

from sglang_pr.internals import patched_targets


def _add_kv_state(result, controller, state: dict) -> None:
    s = controller.scheduler
    checker = getattr(s, "invariant_checker", None)
    state["sglang_pr_patched_hooks"] = patched_targets()  # the scheduler process's
    state["sglang_pr_kv"] = {
        "total_tokens": int(s.max_total_num_tokens),
        "available_tokens": int(s.token_to_kv_pool_allocator.available_size()),
        "evictable_tokens": int(s.tree_cache.evictable_size()),
        "protected_tokens": int(s.tree_cache.protected_size()),
        "running_requests": len(s.running_batch.reqs),
        "waiting_requests": len(s.waiting_queue),
        "free_req_slots": len(s.req_to_token_pool.free_slots),
        "total_req_slots": int(s.req_to_token_pool.size + s.req_to_token_pool.pre_alloc_size),
        "leak_warnings": int(getattr(checker, "count_memory_leak_warnings", 0))
        + int(getattr(checker, "count_req_pool_leak_warnings", 0)),
    }


def kv_state(base_url: str) -> dict:
    """The first scheduler's ``sglang_pr_kv`` block from ``/server_info``."""
    info = requests.get(base_url + "/server_info", timeout=30).json()
    return info["internal_states"][0]["sglang_pr_kv"]


def is_idle_and_clean(state: dict) -> bool:
    """No request holds KV: every slot is free or evictable cache, every request slot free."""
    return (
        state["running_requests"] == 0
        and state["waiting_requests"] == 0
        and state["protected_tokens"] == 0
        and state["available_tokens"] + state["evictable_tokens"] == state["total_tokens"]
        and state["free_req_slots"] == state["total_req_slots"]
        and state["leak_warnings"] == 0
    )


def wait_idle_and_clean(base_url: str, timeout_s: float = 30.0) -> dict:
    """Poll until the server is idle with no KV held; returns the last state either way."""
    deadline = time.monotonic() + timeout_s
    state = kv_state(base_url)
    while not is_idle_and_clean(state) and time.monotonic() < deadline:
        time.sleep(0.2)
        state = kv_state(base_url)
    return state
