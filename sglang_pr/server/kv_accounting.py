"""SGLang's own KV memory accounting, readable over HTTP.

SGLang's scheduler already checks, whenever it is idle, that every KV slot is either free in
the allocator or held (evictable) by the radix cache, and counts a violation as a leak warning.
This module adds those numbers to the scheduler's internal state, which SGLang serves at
``GET /server_info`` under ``internal_states[i]["sglang_pr_kv"]``, so tests and benchmarks can
assert "no leak" with SGLang's numbers rather than our own bookkeeping.

Under data parallelism (``--dp-size N``) SGLang returns one internal state per rank, each from
its own scheduler, so each block carries its ``dp_rank``. The client helpers read all of them:
:func:`kv_state` sums the counts and keeps the blocks under ``"ranks"``, and idle-and-clean
means every rank is (a leak on one rank cannot hide behind spare room on another).
"""

from __future__ import annotations

import time

import requests

from sglang_pr.internals import patched_targets
from sglang_pr.server.dp import LEDGER


def _add_kv_state(result, controller, state: dict) -> None:
    s = controller.scheduler
    checker = getattr(s, "invariant_checker", None)
    rank = _dp_rank()
    state["sglang_pr_patched_hooks"] = patched_targets()  # the scheduler process's
    state["sglang_pr_dp"] = {"dp_rank": rank, **LEDGER.state()}  # groups on this rank
    state["sglang_pr_kv"] = {
        "dp_rank": rank,
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
        **_prefix_cache_counts(s),
    }


def _prefix_cache_counts(scheduler) -> dict:
    """Prefill tokens served from the radix cache, SGLang's own count: the window behind its
    ``cache_hit_rate`` (``/v1/loads``), which keeps the last
    ``SGLANG_CACHE_HIT_RATE_WINDOW_SECONDS`` (15 s by default; a benchmark sets it longer than
    its run so the counts are cumulative). Trimmed only when a prefill adds to it, and only
    kept with ``--enable-metrics`` (both counts stay 0 without it)."""
    window = getattr(getattr(scheduler, "metrics_reporter", None), "cache_hit_rate_window", None)
    return {"prefix_hit_tokens": int(getattr(window, "hit_tokens", 0)),
            "prefix_prefill_tokens": int(getattr(window, "total_tokens", 0))}


def _dp_rank() -> int:
    """This scheduler's data-parallel rank (0 without data parallelism)."""
    from sglang.srt.runtime_context import get_parallel

    return int(get_parallel().dp_rank or 0)


# Counts that add up across ranks; everything else in a block is per rank.
SUMMED = ("total_tokens", "available_tokens", "evictable_tokens", "protected_tokens",
          "running_requests", "waiting_requests", "free_req_slots", "total_req_slots",
          "leak_warnings", "prefix_hit_tokens", "prefix_prefill_tokens")


def combine(blocks: list[dict]) -> dict:
    """One state for a server: the counts summed over its ranks, the blocks under ``ranks``
    (ordered by ``dp_rank``). With one rank the sums are that rank's own numbers."""
    ranks = sorted(blocks, key=lambda b: b.get("dp_rank", 0))
    return {**{k: sum(int(b.get(k, 0)) for b in ranks) for k in SUMMED}, "ranks": ranks}


async def kv_by_rank(tokenizer_manager) -> dict:
    """Server side (main process): :func:`combine` over every rank's block, as
    ``/server_info`` would report them (for a route such as ``/sglang_pr/info``)."""
    states = await tokenizer_manager.get_internal_state()
    return combine([s["sglang_pr_kv"] for s in states if "sglang_pr_kv" in s])


def kv_states(base_url: str) -> list[dict]:
    """Every scheduler's ``sglang_pr_kv`` block from ``/server_info`` (one per DP rank)."""
    info = requests.get(base_url + "/server_info", timeout=30).json()
    return [s["sglang_pr_kv"] for s in info["internal_states"]]


def kv_state(base_url: str) -> dict:
    """The server's KV state: counts summed over its ranks, per-rank blocks in ``ranks``."""
    return combine(kv_states(base_url))


def _rank_idle_and_clean(state: dict) -> bool:
    return (
        state["running_requests"] == 0
        and state["waiting_requests"] == 0
        and state["protected_tokens"] == 0
        and state["available_tokens"] + state["evictable_tokens"] == state["total_tokens"]
        and state["free_req_slots"] == state["total_req_slots"]
        and state["leak_warnings"] == 0
    )


def is_idle_and_clean(state: dict) -> bool:
    """No request holds KV on any rank: every slot free or evictable cache, every request slot
    free, no leak warning. ``state``: from :func:`kv_state`, or one rank's block."""
    return all(_rank_idle_and_clean(r) for r in state.get("ranks", [state]))


def wait_idle_and_clean(base_url: str, timeout_s: float = 30.0) -> dict:
    """Poll until the server is idle with no KV held; returns the last state either way."""
    deadline = time.monotonic() + timeout_s
    state = kv_state(base_url)
    while not is_idle_and_clean(state) and time.monotonic() < deadline:
        time.sleep(0.2)
        state = kv_state(base_url)
    return state
