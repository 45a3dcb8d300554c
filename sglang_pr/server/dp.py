"""Fork groups under SGLang's data parallelism (``--dp-size N``): every branch on one rank.

A fork group only pays when its branches share the prompt's KV in one radix cache, but SGLang
0.5.23's DP controller (``managers/data_parallel_controller.py``) places every request on its
own (``--load-balance-method auto`` = round robin): an ``n = 4`` request's prefix warm-up went
to rank 0 and its four copies to ranks 1, 0, 1, 0, so half of them prefilled the prompt again.
The one lever SGLang offers is the request field ``routed_dp_rank`` (``data_parallel_rank`` is
its deprecated alias): the controller sends such a request straight to that rank
(``maybe_external_dp_rank_routing``), and ``GenerateReqInput.__getitem__`` copies it to every
sub-request of a batch. Aborts need nothing: the controller broadcasts ``AbortReq`` to every
rank, and the rank holding the rid finishes it and frees its KV.

Two placements, one per kind of group:

* **DeepConf groups** (group route, OpenAI group mode; main process): :func:`choose_rank` picks
  one rank for the whole group and ``server_backend`` puts it in every branch's
  ``routed_dp_rank``. The choice is the rank with the fewest branches in flight, counted here
  (:data:`BRANCH_LOAD`, each branch held by :func:`branch_running`), ties broken by a hash of
  the prompt. Why least-loaded and not a prompt hash: within a group the prefix is shared
  anyway (one rank), and groups differ several-fold in length (early stops, consensus aborts),
  which a hash or round robin cannot see; the hash tie-break still sends a repeated prompt to
  the rank that cached it when the ranks are equally busy.
* **``n > 1`` and frontend ``fork``** (the DP controller process, hook :func:`_before_dispatch`
  on ``DataParallelController.dispatching_with_trace``): their branches are separate requests
  whose tokens repeat (or continue) one prompt. ``n > 1`` announces the prompt first with a
  ``max_new_tokens = 0`` warm-up (``_handle_batch_request``); the frontend means to
  (``commit_lazy_operations``), but in 0.5.23 ``StreamExecutor.fork`` tests ``self.text_``
  before its worker thread has written the prompt, so the announcement is mostly skipped and
  the forks arrive bare, at once. So the rule is prefix affinity for every request: one whose
  tokens start with a recently placed prompt goes to that prompt's rank (its KV is there); any
  other is placed as the controller's own ``--load-balance-method`` would (round robin, or the
  load-aware methods), and its prompt remembered. An announcement is remembered for
  :data:`ANNOUNCED_TTL_S`, any other prompt for :data:`IMPLICIT_TTL_S`, both from creation and
  never refreshed by a repeat, so a prompt sent over and over cannot hold all traffic on one
  rank for good. It runs in the one process that dispatches for every tokenizer worker, so the
  map is complete and needs no locks.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import time
from collections import Counter, OrderedDict
from dataclasses import dataclass
from typing import Iterator, Optional, Sequence

ANNOUNCED_TTL_S = 300.0  # a declared fork (max_new_tokens=0): later gens of its forks follow
IMPLICIT_TTL_S = 30.0  # any other prompt: forks arrive together; repeats later re-balance
AFFINITY_MAX_ENTRIES = 4096  # oldest forgotten first: bounded memory in the controller
ANCHOR_TOKENS = 32  # prefixes are indexed by their first min(32, len) tokens
MIN_PREFIX_TOKENS = 2  # a shorter announcement (a lone BOS) would capture every request


# --- main process: one rank per DeepConf group ---------------------------------------------

def dp_size(tokenizer_manager) -> int:
    """The number of DP ranks the tokenizer manager checks ``routed_dp_rank`` against."""
    return int(getattr(tokenizer_manager, "elastic_worker_count", 1) or 1)


class BranchLoad:
    """Branches (and group prefills) in flight per rank, as this process sent them."""

    def __init__(self) -> None:
        self.inflight: Counter = Counter()

    def choose(self, n_ranks: int, key: str) -> int:
        """The least-loaded rank; among equals, the one a hash of ``key`` names."""
        start = int.from_bytes(hashlib.blake2b(key.encode("utf-8", "surrogatepass"),
                                               digest_size=8).digest(), "big") % n_ranks
        order = [(start + i) % n_ranks for i in range(n_ranks)]
        return min(order, key=lambda r: self.inflight[r])  # min keeps the first of equals

    @contextlib.contextmanager
    def running(self, rank: Optional[int]) -> Iterator[None]:
        if rank is None:
            yield
            return
        self.inflight[rank] += 1
        try:
            yield
        finally:
            self.inflight[rank] -= 1


BRANCH_LOAD = BranchLoad()


def prompt_key(prompt: dict) -> str:
    """What identifies a group's prompt for the tie-break: its text or its token ids."""
    if prompt.get("text") is not None:
        return str(prompt["text"])
    return ",".join(str(t) for t in prompt.get("input_ids") or ())


def choose_rank(tokenizer_manager, prompt: dict) -> Optional[int]:
    """The rank for a whole group, or None when the server has one rank (nothing to pin).

    Pick it synchronously and enter :func:`branch_running` for the prefill before the next
    ``await``, so groups arriving together see each other's load.
    """
    n = dp_size(tokenizer_manager)
    return BRANCH_LOAD.choose(n, prompt_key(prompt)) if n > 1 else None


def branch_running(rank: Optional[int]):
    """Counts one request of a group on ``rank`` while the ``with`` block runs."""
    return BRANCH_LOAD.running(rank)


# --- DP controller process: n > 1 and frontend forks follow their prompt's rank ------------

@dataclass
class _Entry:
    prefix: tuple
    rank: int
    expires: float


class PrefixAffinity:
    """Placed prompt -> rank, matched by "the request's tokens start with the stored prefix".

    A prompt's last token is dropped before storing: a branch's text continues the prompt, and
    a BPE tokenizer may merge the prompt's last token with what follows.
    """

    def __init__(self, max_entries: int = AFFINITY_MAX_ENTRIES):
        self.max_entries = max_entries
        self.entries: OrderedDict[tuple, _Entry] = OrderedDict()  # by prefix, oldest first
        self.index: dict[tuple, list[_Entry]] = {}  # anchor -> entries
        self.anchor_lengths: Counter = Counter()  # anchor length -> entries using it

    @staticmethod
    def _anchor(prefix: Sequence[int]) -> tuple:
        return tuple(prefix[:ANCHOR_TOKENS])

    def record(self, ids: Sequence[int], rank: int, now: float, ttl_s: float) -> None:
        prefix = tuple(ids[:-1])
        if len(prefix) < MIN_PREFIX_TOKENS:
            return
        self._drop(prefix)
        entry = _Entry(prefix, rank, now + ttl_s)
        self.entries[prefix] = entry
        anchor = self._anchor(prefix)
        self.index.setdefault(anchor, []).append(entry)
        self.anchor_lengths[len(anchor)] += 1
        # Oldest first: expired entries at the front go now, others when a lookup meets them.
        while self.entries and (len(self.entries) > self.max_entries
                                or next(iter(self.entries.values())).expires <= now):
            self._drop(next(iter(self.entries)))

    def _drop(self, prefix: tuple) -> None:
        entry = self.entries.pop(prefix, None)
        if entry is None:
            return
        anchor = self._anchor(prefix)
        bucket = self.index[anchor]
        bucket.remove(entry)
        if not bucket:
            del self.index[anchor]
        self.anchor_lengths[len(anchor)] -= 1
        if not self.anchor_lengths[len(anchor)]:
            del self.anchor_lengths[len(anchor)]

    def lookup(self, ids: Sequence[int], now: float) -> Optional[_Entry]:
        """The longest live entry ``ids`` starts with, or None."""
        ids = tuple(ids)
        best: Optional[_Entry] = None
        for length in list(self.anchor_lengths):
            for entry in list(self.index.get(ids[:length], ())) if len(ids) >= length else ():
                if entry.expires <= now:
                    self._drop(entry.prefix)
                elif ids[:len(entry.prefix)] == entry.prefix and (
                        best is None or len(entry.prefix) > len(best.prefix)):
                    best = entry
        return best


AFFINITY = PrefixAffinity()


def _active_ranks(controller) -> list[int]:
    return [i for i, on in enumerate(controller.dp_active) if on and controller.status[i]]


def policy_rank(controller, req) -> Optional[int]:
    """The rank the controller's own ``--load-balance-method`` would give ``req`` now, advancing
    its state exactly as its dispatch would; None for methods we leave alone."""
    from sglang.srt.managers.data_parallel_controller import LoadBalanceMethod as M

    method = controller.load_balance_method
    active = _active_ranks(controller)
    if not active:
        return None
    if method == M.ROUND_ROBIN:
        rank = active[controller.round_robin_counter % len(active)]
        controller.round_robin_counter = (controller.round_robin_counter + 1) % len(active)
        return rank
    if method in (M.TOTAL_REQUESTS, M.TOTAL_TOKENS):
        controller.refresh_load_budget()
        return controller.dp_budget.dispatch(method, estimated_tokens=len(req.input_ids))
    return None  # follow_bootstrap_room: PD disaggregation routes by its own key


def _is_announcement(req) -> bool:
    return getattr(getattr(req, "sampling_params", None), "max_new_tokens", None) == 0


def _before_dispatch(controller, req, *args, **kwargs) -> None:
    """Hook (before ``DataParallelController.dispatching_with_trace``): place a generate request
    by prefix affinity (module docstring) through its ``routed_dp_rank``."""
    from sglang.srt.managers.io_struct import TokenizedGenerateReqInput
    from sglang.srt.managers.utils import is_health_check_generate_req

    if not isinstance(req, TokenizedGenerateReqInput) or is_health_check_generate_req(req):
        return None
    ids = req.input_ids
    if ids is None or len(ids) == 0:
        return None
    now = time.monotonic()
    active = _active_ranks(controller)
    found = AFFINITY.lookup(ids, now)
    if req.routed_dp_rank is None:
        if found is not None and found.rank in active:
            req.routed_dp_rank = found.rank
        else:
            found = None  # its rank went away: place it afresh
            req.routed_dp_rank = policy_rank(controller, req)
    if req.routed_dp_rank is None:  # a policy we leave alone (PD disaggregation)
        return None
    announced = _is_announcement(req)
    if announced or found is None or len(found.prefix) < len(ids) - 1 \
            or found.rank != req.routed_dp_rank:  # a repeat does not extend its entry's life
        AFFINITY.record(ids, req.routed_dp_rank, now,
                        ANNOUNCED_TTL_S if announced else IMPLICIT_TTL_S)
    return None


class _SleepyReceiver:
    """The controller's socket from the tokenizer, but a receive that finds nothing waits (up to
    1 s, SGLang's own ``IdleSleeper`` period) until something arrives, then reports "nothing"
    as before. SGLang 0.5.23's ``DataParallelController.event_loop`` polls this socket without
    ever blocking and ignores ``--sleep-on-idle``: an idle DP server keeps a whole core busy
    (measured: 97 % on this 2-core machine). A message wakes the poll at once."""

    def __init__(self, sock) -> None:
        import zmq

        self._sock = sock
        self._poller = zmq.Poller()
        self._poller.register(sock, zmq.POLLIN)

    def _wait_on_empty(self, recv, *args, **kwargs):
        import zmq

        try:
            return recv(*args, **kwargs)
        except zmq.Again:
            self._poller.poll(1000)
            raise

    def recv(self, *args, **kwargs):
        return self._wait_on_empty(self._sock.recv, *args, **kwargs)

    def recv_pyobj(self, *args, **kwargs):
        return self._wait_on_empty(self._sock.recv_pyobj, *args, **kwargs)

    def __getattr__(self, name):
        return getattr(self._sock, name)


def _before_event_loop(controller, *args, **kwargs) -> None:
    """Hook (before ``DataParallelController.event_loop``): honour ``--sleep-on-idle``."""
    from sglang.srt.runtime_context import get_device

    sock = getattr(controller, "recv_from_tokenizer", None)
    if get_device().sleep_on_idle and sock is not None \
            and not isinstance(sock, _SleepyReceiver):
        controller.recv_from_tokenizer = _SleepyReceiver(sock)
    return None


# --- each scheduler: which groups ran on this rank (observation) ----------------------------

GROUP_RID_PREFIX = "dcg-"  # server_backend's rids: "dcg-<group id>-<branch index | prefill>"
LEDGER_MAX_GROUPS = 1024  # the most recent groups each rank reports


class GroupLedger:
    """Requests per DeepConf group that reached this scheduler (one ledger per rank), so a
    client can check from outside that a group never spanned two ranks: ``/server_info``'s
    ``internal_states[i]["sglang_pr_dp"]``. Group routes' responses carry no rank of their own
    (``/generate``'s ``meta_info.dp_rank`` does)."""

    def __init__(self, max_groups: int = LEDGER_MAX_GROUPS) -> None:
        self.max_groups = max_groups
        self.groups: OrderedDict[str, int] = OrderedDict()
        self.requests = 0

    def add(self, rid: object) -> None:
        self.requests += 1
        if not isinstance(rid, str) or not rid.startswith(GROUP_RID_PREFIX):
            return
        group = rid[len(GROUP_RID_PREFIX):].rsplit("-", 1)[0]
        self.groups[group] = self.groups.pop(group, 0) + 1  # most recent last
        while len(self.groups) > self.max_groups:
            self.groups.popitem(last=False)

    def state(self) -> dict:
        return {"requests": self.requests, "groups": dict(self.groups)}


LEDGER = GroupLedger()


def group_ranks(base_url: str) -> dict[str, set[int]]:
    """Client side: group id -> the ranks its requests reached, from ``/server_info``."""
    import requests

    info = requests.get(base_url + "/server_info", timeout=30).json()
    seen: dict[str, set[int]] = {}
    for state in info["internal_states"]:
        dp = state["sglang_pr_dp"]
        for group in dp["groups"]:
            seen.setdefault(group, set()).add(int(dp["dp_rank"]))
    return seen


def _count_request(scheduler, recv_req, *args, **kwargs) -> None:
    """Hook (before ``Scheduler.handle_generate_request``): this rank received ``recv_req``."""
    LEDGER.add(getattr(recv_req, "rid", None))
    return None


# --- serve: how many ranks this machine holds ------------------------------------------------

def cpu_rank_binding(ranks: int, cpus: Sequence[int]) -> str:
    """``SGLANG_CPU_OMP_THREADS_BIND`` for ``ranks`` ranks over ``cpus``: contiguous, near-equal
    shares (``"0|1"`` for 2 ranks on 2 cores). SGLang needs it as soon as there are more ranks
    than NUMA nodes (``utils/numa_utils.py::init_threads_binding`` asserts otherwise)."""
    cpus = sorted(cpus)
    if ranks < 1 or ranks > len(cpus):
        raise ValueError(f"{ranks} ranks cannot share {len(cpus)} CPU cores")
    base, extra = divmod(len(cpus), ranks)
    shares, start = [], 0
    for r in range(ranks):
        size = base + (r < extra)
        shares.append(",".join(str(c) for c in cpus[start:start + size]))
        start += size
    return "|".join(shares)


def usable_cpus() -> list[int]:
    return sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") \
        else list(range(os.cpu_count() or 1))
