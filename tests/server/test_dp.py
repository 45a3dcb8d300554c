"""Fork groups under data parallelism (sglang_pr/server/dp.py).

Unit tests of the placement pieces first (no server); then one ``--dp-size 2`` server, started
once for this module, runs 50 DeepConf groups (early stops and consensus aborts included), an
``n > 1`` request and frontend-style forks, and every group must stay on one rank while the
groups spread over both, with each rank's KV idle and clean afterwards.
"""

from __future__ import annotations

import asyncio
import os
import time
import types
from array import array

import pytest

from sglang_pr.server import dp
from sglang_pr.server.dp import BranchLoad, GroupLedger, PrefixAffinity, cpu_rank_binding


# --- main process: least-loaded rank per group -------------------------------------------

def test_branch_load_picks_least_loaded_then_hash():
    load = BranchLoad()
    first = load.choose(2, "Q: 1")
    assert load.choose(2, "Q: 1") == first  # equal load: the prompt's hash decides, stably
    with load.running(first):
        assert load.choose(2, "Q: 1") == 1 - first  # the busier rank is avoided
        with load.running(1 - first), load.running(1 - first):
            assert load.choose(2, "Q: 1") == first
    assert load.inflight[first] == 0 and load.inflight[1 - first] == 0
    assert {load.choose(2, f"Q: {i}") for i in range(20)} == {0, 1}  # ties spread by prompt


def test_branch_load_releases_on_error_and_ignores_no_rank():
    load = BranchLoad()
    with pytest.raises(RuntimeError), load.running(1):
        raise RuntimeError("branch failed")
    assert load.inflight[1] == 0
    with load.running(None):
        assert not +load.inflight


def test_choose_rank_only_with_several_ranks():
    one, two = types.SimpleNamespace(elastic_worker_count=1), \
        types.SimpleNamespace(elastic_worker_count=2)
    assert dp.choose_rank(one, {"text": "Q"}) is None
    assert dp.choose_rank(two, {"input_ids": [1, 2]}) in (0, 1)


def test_concurrent_groups_spread_over_ranks():
    """Groups that start together see each other's prefill and land on different ranks."""
    tm = types.SimpleNamespace(elastic_worker_count=2)
    ranks = []

    async def group(i):
        rank = dp.choose_rank(tm, {"text": "same prompt"})  # before any await, like a route
        ranks.append(rank)
        with dp.branch_running(rank):
            await asyncio.sleep(0.01)

    async def main():
        await asyncio.gather(*(group(i) for i in range(4)))

    asyncio.run(main())
    assert sorted(ranks) == [0, 0, 1, 1]


# --- DP controller: prefix affinity ---------------------------------------------------------

def _rank(aff, ids, now):
    entry = aff.lookup(ids, now)
    return None if entry is None else entry.rank


def test_prefix_affinity_matches_longest_live_prefix():
    aff = PrefixAffinity()
    aff.record([1, 2, 3, 4], rank=1, now=0, ttl_s=10)  # stored without its last token: (1, 2, 3)
    aff.record([1, 2, 3, 4, 5, 6], rank=0, now=0, ttl_s=10)
    assert _rank(aff, [1, 2, 3, 9, 9], now=1) == 1  # BPE may merge the last prefix token
    assert _rank(aff, [1, 2, 3, 4, 5, 7], now=1) == 0  # the longer prefix wins
    assert _rank(aff, [1, 2, 4], now=1) is None
    assert _rank(aff, [1, 2, 3, 9], now=11) is None  # expired (TTL from creation)
    aff.record([9, 9, 9], rank=1, now=12, ttl_s=10)  # recording sweeps out the expired front
    assert list(aff.entries) == [(9, 9)] and len(aff.index) == 1
    assert dict(aff.anchor_lengths) == {2: 1}


def test_prefix_affinity_long_prefixes_and_bounds():
    aff = PrefixAffinity(max_entries=3)
    long = list(range(100))
    aff.record(long, rank=1, now=0, ttl_s=100)
    assert _rank(aff, long + [7, 8], now=1) == 1
    assert _rank(aff, long[:50] + [999] + long[51:], now=1) is None  # same anchor, differs later
    aff.record([5], rank=0, now=0, ttl_s=100)  # too short to hold any traffic
    assert _rank(aff, [5, 6], now=1) is None
    for i in range(4):
        aff.record([200 + i, 1, 2], rank=i % 2, now=0, ttl_s=100)
    assert len(aff.entries) == 3 and _rank(aff, long, now=1) is None  # the oldest went first


class FakeController:
    """What _before_dispatch reads from SGLang's DataParallelController."""

    def __init__(self, n=2):
        from sglang.srt.managers.data_parallel_controller import LoadBalanceMethod

        self.load_balance_method = LoadBalanceMethod.ROUND_ROBIN
        self.dp_active, self.status = [True] * n, [True] * n
        self.round_robin_counter = 0


def _req(ids, max_new_tokens, rid="r", rank=None):
    from sglang.srt.managers.io_struct import TokenizedGenerateReqInput

    from sglang.srt.sampling.sampling_params import SamplingParams

    return TokenizedGenerateReqInput(
        rid=rid, input_text=None, input_ids=array("i", ids), input_embeds=None, mm_inputs=None,
        token_type_ids=None, sampling_params=SamplingParams(max_new_tokens=max_new_tokens),
        return_logprob=False, logprob_start_len=-1, top_logprobs_num=0,
        token_ids_logprob=None, stream=False, routed_dp_rank=rank)


def test_before_dispatch_pins_n_copies_to_their_announced_prefix(monkeypatch):
    monkeypatch.setattr(dp, "AFFINITY", PrefixAffinity())
    ctl = FakeController()
    ctl.round_robin_counter = 1
    warm = _req([7, 8, 9, 10], 0)
    dp._before_dispatch(ctl, warm)
    assert warm.routed_dp_rank == 1 and ctl.round_robin_counter == 0  # SGLang's own turn, used
    copies = [_req([7, 8, 9, 10], 16, rid=f"c{i}") for i in range(4)]
    for c in copies:
        dp._before_dispatch(ctl, c)
    assert [c.routed_dp_rank for c in copies] == [1] * 4
    assert ctl.round_robin_counter == 0  # pinned copies do not take round-robin turns
    entry = dp.AFFINITY.entries[(7, 8, 9)]
    assert entry.expires > time.monotonic() + dp.ANNOUNCED_TTL_S - 5  # an announcement: long
    explicit = _req([4, 4, 4, 4], 0, rank=0)
    dp._before_dispatch(ctl, explicit)
    assert explicit.routed_dp_rank == 0
    follow = _req([4, 4, 4, 4, 5], 8)
    dp._before_dispatch(ctl, follow)
    assert follow.routed_dp_rank == 0  # an explicitly placed prefill is followed too


def test_before_dispatch_keeps_bare_forks_together_and_balances_the_rest(monkeypatch):
    """Frontend forks arrive without an announcement: the first places the prompt, the others
    follow it; other prompts still take SGLang's round-robin turns."""
    monkeypatch.setattr(dp, "AFFINITY", PrefixAffinity())
    ctl = FakeController()
    ranks = {}
    for prompt in ([1, 2, 3, 4], [5, 6, 7, 8], [9, 9, 9, 9]):
        forks = [_req(prompt, 8, rid=f"f{i}") for i in range(3)]
        for f in forks:
            dp._before_dispatch(ctl, f)
        assert len({f.routed_dp_rank for f in forks}) == 1
        ranks[tuple(prompt)] = forks[0].routed_dp_rank
    assert list(ranks.values()) == [0, 1, 0]
    entry = dp.AFFINITY.entries[(1, 2, 3)]
    before = entry.expires
    assert before < time.monotonic() + dp.IMPLICIT_TTL_S + 1  # implicit: the short life
    turn = _req([1, 2, 3, 4, 10, 11], 8)  # a later turn continuing the first prompt
    dp._before_dispatch(ctl, turn)
    assert turn.routed_dp_rank == 0 and (1, 2, 3, 4, 10) in dp.AFFINITY.entries
    dp._before_dispatch(ctl, _req([1, 2, 3, 4], 8))
    assert dp.AFFINITY.entries[(1, 2, 3)].expires == before  # a repeat does not extend it


def test_before_dispatch_leaves_health_checks_and_inactive_ranks(monkeypatch):
    from sglang.srt.managers.utils import HEALTH_CHECK_RID_PREFIX

    monkeypatch.setattr(dp, "AFFINITY", PrefixAffinity())
    ctl = FakeController()
    health = _req([1, 2, 3], 0, rid=HEALTH_CHECK_RID_PREFIX + "x")
    dp._before_dispatch(ctl, health)
    assert health.routed_dp_rank is None and not dp.AFFINITY.entries
    dp.AFFINITY.record([1, 2, 3, 4], rank=1, now=time.monotonic(), ttl_s=100)
    ctl.status[1] = False  # rank 1 went away: place the request afresh, on a live rank
    req = _req([1, 2, 3, 4, 5], 8)
    dp._before_dispatch(ctl, req)
    assert req.routed_dp_rank == 0 and dp.AFFINITY.entries[(1, 2, 3, 4)].rank == 0


# --- scheduler ledger, serve's binding -------------------------------------------------------

def test_group_ledger_counts_group_requests_only():
    ledger = GroupLedger(max_groups=2)
    for rid in ("dcg-aa-prefill", "dcg-aa-0", "dcg-aa-1", "plain", None, "dcg-bb-0", "dcg-cc-3"):
        ledger.add(rid)
    assert ledger.state() == {"requests": 7, "groups": {"bb": 1, "cc": 1}}  # aa was oldest


def test_cpu_rank_binding():
    assert cpu_rank_binding(2, [0, 1]) == "0|1"
    assert cpu_rank_binding(2, [3, 0, 1, 2, 4]) == "0,1,2|3,4"
    assert cpu_rank_binding(1, [0, 1]) == "0,1"
    with pytest.raises(ValueError):
        cpu_rank_binding(3, [0, 1])



def test_idle_controller_socket_waits_for_a_message():
    """The DP controller's receive on an empty socket sleeps until a message comes (the fix
    for its busy loop under --sleep-on-idle), and still reports "nothing" the same way."""
    import threading

    import zmq

    ctx = zmq.Context()
    pull, push = ctx.socket(zmq.PULL), ctx.socket(zmq.PUSH)
    pull.bind("inproc://dp-test")
    push.connect("inproc://dp-test")
    sock = dp._SleepyReceiver(pull)
    try:
        timer = threading.Timer(0.2, lambda: push.send(b"x"))
        start = time.monotonic()
        timer.start()
        with pytest.raises(zmq.Again):
            sock.recv(flags=zmq.NOBLOCK)
        waited = time.monotonic() - start
        assert 0.15 < waited < 0.9, waited  # slept, and woke on the message, not the timeout
        assert sock.recv(flags=zmq.NOBLOCK) == b"x"
        timer.join()
    finally:
        push.close(linger=0)
        pull.close(linger=0)
        ctx.term()


# --- sglang-pr serve: ranks the machine holds ---------------------------------------------------

def _capacity(monkeypatch, cpus, nodes, **settings):
    from sglang.srt.utils import common

    from sglang_pr.cli import serve

    monkeypatch.setattr(dp, "usable_cpus", lambda: list(range(cpus)))
    monkeypatch.setattr(common, "get_cpu_ids_by_node", lambda: ["x"] * nodes)
    return serve.check_rank_capacity({"dp_size": 1, "tp_size": 1, "pp_size": 1, "nnodes": 1,
                                      **settings}, gpu=False)


def test_serve_binds_ranks_to_cores_when_numa_nodes_run_out(monkeypatch):
    from sglang_pr.cli.serve import BIND_ENV

    monkeypatch.delenv(BIND_ENV, raising=False)
    assert _capacity(monkeypatch, cpus=2, nodes=1, dp_size=2) == 2
    assert os.environ[BIND_ENV] == "0|1"  # SGLang would assert with its default binding
    monkeypatch.delenv(BIND_ENV)
    assert _capacity(monkeypatch, cpus=8, nodes=2, dp_size=2) == 2
    assert BIND_ENV not in os.environ  # one NUMA node per rank: SGLang's default holds
    monkeypatch.setenv(BIND_ENV, "0-3|4-7")
    assert _capacity(monkeypatch, cpus=8, nodes=1, dp_size=2) == 2
    assert os.environ[BIND_ENV] == "0-3|4-7"  # the user's binding wins


def test_serve_refuses_more_ranks_than_cores_or_bind_groups(monkeypatch):
    from sglang_pr.cli import CliError
    from sglang_pr.cli.serve import BIND_ENV

    monkeypatch.delenv(BIND_ENV, raising=False)
    with pytest.raises(CliError, match=r"--dp-size 3: 3 ranks, .* 2 CPU core"):
        _capacity(monkeypatch, cpus=2, nodes=1, dp_size=3)
    with pytest.raises(CliError, match=r"--dp-size 2 x --tp-size 2: 4 ranks"):
        _capacity(monkeypatch, cpus=2, nodes=1, dp_size=2, tp_size=2)
    monkeypatch.setenv(BIND_ENV, "0")
    with pytest.raises(CliError, match=f"{BIND_ENV}=0: 1 core group"):
        _capacity(monkeypatch, cpus=2, nodes=1, dp_size=2)


def test_cli_too_many_dp_ranks_exits_2_with_one_line():
    import subprocess
    import sys

    n = len(dp.usable_cpus()) + 1
    proc = subprocess.run([sys.executable, "-P", "-m", "sglang_pr.cli", "serve", "--dp-size",
                           str(n)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith(f"sglang-pr serve: error: --dp-size {n}: {n} ranks"), proc.stderr
    assert "CPU core" in last and "Traceback" not in proc.stderr


# --- one --dp-size 2 server -------------------------------------------------------------------

DP_ARGS = ["--dp-size", "2", "--max-total-tokens", "16384", "--sleep-on-idle"]
# Seeded sampling: a seeded group is reproducible, so its early stops and aborts are not luck.
DP_ENV = {"SGLANG_PR_SEEDED_SAMPLING": "1"}
GROUP_PATH = "/sglang_pr/deepconf/group"


def server_test(fn):
    return pytest.mark.server(pytest.mark.slow(fn))


@pytest.fixture(scope="module")
def dp_url(sglang_server_factory):
    yield sglang_server_factory("dp2", extra_args=DP_ARGS, env=DP_ENV).base_url
    sglang_server_factory.release("dp2")  # this module's own: free its memory for the next


def _post(url, path, body, timeout=300):
    import requests

    r = requests.post(url + path, json=body, timeout=timeout)
    assert r.status_code == 200, r.text
    return r.json()


@server_test
def test_plugin_loads_in_every_rank(dp_url):
    import requests

    from sglang_pr import plugin

    wanted = {h.target for m in [plugin, *plugin.subsystems()] for h in m.HOOKS if h.env is None}
    info = requests.get(dp_url + "/sglang_pr/info", timeout=30).json()
    assert wanted <= set(info["patched_hooks"])
    assert [r["dp_rank"] for r in info["kv"]["ranks"]] == [0, 1]  # KV accounting per rank
    server_info = requests.get(dp_url + "/server_info", timeout=30).json()
    # serve's CPU default: every group test below runs the cascade backend under DP
    assert server_info["attention_backend"] == "cascade"
    states = server_info["internal_states"]
    assert sorted(s["sglang_pr_kv"]["dp_rank"] for s in states) == [0, 1]  # one per rank
    for state in states:
        assert wanted <= set(state["sglang_pr_patched_hooks"]), state["sglang_pr_kv"]
        assert state["sglang_pr_dp"]["dp_rank"] == state["sglang_pr_kv"]["dp_rank"]


@server_test
def test_n_copies_stay_with_their_prefix(dp_url):
    """SGLang alone spreads an n > 1 request's copies round robin; here they all run on the
    rank that prefilled the prompt, and reuse its KV."""
    from sglang_pr.model.task import heldout_set

    ranks = set()
    for i, p in enumerate(heldout_set(4)):
        outs = _post(dp_url, "/generate", {"text": p.prompt, "sampling_params": {
            "n": 3, "max_new_tokens": 8, "temperature": 1.0, "sampling_seed": i}})
        got = {o["meta_info"]["dp_rank"] for o in outs}
        assert len(got) == 1, [o["meta_info"] for o in outs]
        assert all(o["meta_info"]["cached_tokens"] >= o["meta_info"]["prompt_tokens"] - 1
                   for o in outs), [o["meta_info"] for o in outs]
        ranks |= got
    assert ranks == {0, 1}  # different requests still spread over the ranks


@server_test
def test_frontend_fork_stays_on_one_rank(dp_url):
    import sglang as sgl

    from sglang_pr.model.task import heldout_set

    @sgl.function
    def forked(s, prompt):
        s += prompt
        forks = s.fork(3)
        forks += sgl.gen("answer", max_tokens=8, temperature=1.0)
        s["ranks"] = [f.get_meta_info("answer")["dp_rank"] for f in forks]

    ranks = set()
    for p in heldout_set(8)[4:]:  # other prompts than the n > 1 test (no cached prefix)
        state = forked.run(prompt=p.prompt, backend=sgl.RuntimeEndpoint(dp_url))
        assert state.error() is None
        assert len(set(state["ranks"])) == 1, state["ranks"]
        ranks |= set(state["ranks"])
    assert ranks == {0, 1}


@server_test
def test_50_groups_each_on_one_rank_and_kv_clean_per_rank(dp_url):
    from concurrent.futures import ThreadPoolExecutor

    from sglang_pr.model.task import heldout_set
    from sglang_pr.server.dp import group_ranks
    from sglang_pr.server.kv_accounting import is_idle_and_clean, wait_idle_and_clean

    problems = heldout_set(50)
    before = set(group_ranks(dp_url))
    low = ({"method": "deepconf_low", "budget": 8, "n_init": 2, "window": 4, "width": 4},
           {"max_new_tokens": 48, "temperature": 1.0})
    # temperature 2.0 spreads the branches' lengths, so a consensus leaves some running to abort
    spread = ({"method": "sc", "budget": 8, "width": 8, "consensus_stop": True, "tau": 0.5},
              {"max_new_tokens": 96, "temperature": 2.0})

    def run(i):
        cfg, sp = (low, spread)[i % 2]
        return _post(dp_url, GROUP_PATH, {"text": problems[i].prompt, "deepconf": cfg,
                                          "sampling_params": {**sp, "sampling_seed": 1000 * i}})

    with ThreadPoolExecutor(6) as ex:
        results = list(ex.map(run, range(50)))
    totals = [r["totals"] for r in results]
    assert sum(t["stopped_early"] for t in totals[0::2]) > 0
    assert sum(t["aborted"] for t in totals[1::2]) > 0
    seen = {g: r for g, r in group_ranks(dp_url).items() if g not in before}
    assert len(seen) == 50, len(seen)  # every group (prefill and branches) reached the ledger
    assert all(len(r) == 1 for r in seen.values()), {g: r for g, r in seen.items() if len(r) > 1}
    per_rank = [sum(r == {k} for r in seen.values()) for k in (0, 1)]
    assert min(per_rank) >= 10, per_rank  # the groups spread over both ranks
    state = wait_idle_and_clean(dp_url, timeout_s=60)
    assert len(state["ranks"]) == 2 and is_idle_and_clean(state), state


# --- Medusa under DP: a second --dp-size 2 server, after the first is released ------------------

@pytest.fixture(scope="module")
def dp_medusa_url(sglang_server_factory):
    from sglang_pr.medusa import SHIPPED_HEADS_DIR

    sglang_server_factory.release("dp2")  # the tests above are done with it; memory
    args = [*DP_ARGS, "--speculative-algorithm", "MEDUSA",
            "--speculative-draft-model-path", str(SHIPPED_HEADS_DIR)]
    yield sglang_server_factory("dp2_medusa", extra_args=args).base_url
    sglang_server_factory.release("dp2_medusa")


@server_test
def test_medusa_under_dp_is_greedy_identical_on_both_ranks(dp_medusa_url, base_url):
    from sglang_pr.model import task
    from sglang_pr.server.kv_accounting import is_idle_and_clean, wait_idle_and_clean

    prompts = [p.prompt for p in task.heldout_set(6)]
    sp = {"temperature": 0, "max_new_tokens": 48}
    spec = [_post(dp_medusa_url, "/generate", {"text": t, "sampling_params": sp}) for t in prompts]
    plain = [_post(base_url, "/generate", {"text": t, "sampling_params": sp}) for t in prompts]
    assert [o["text"] for o in spec] == [o["text"] for o in plain]
    tokens = sum(o["meta_info"]["completion_tokens"] for o in spec)
    steps = sum(o["meta_info"]["spec_verify_ct"] for o in spec)
    assert tokens >= 1.5 * steps, (tokens, steps)  # the heads really draft under DP
    state = wait_idle_and_clean(dp_medusa_url, timeout_s=60)
    assert len(state["ranks"]) == 2 and is_idle_and_clean(state), state
