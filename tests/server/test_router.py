"""Fork groups behind SGLang's router (smg, plain worker mode, cache_aware): issue 14.

One cluster (two ``sglang-pr serve`` workers, the shipped model, a 4096-token KV pool each,
``--sleep-on-idle``, and smg in front) is started once for this module by
``sglang_pr.server.cluster.start_cluster`` and stopped at its end. Which worker ran a group is
read from the workers' own group ledgers (``/server_info``: ``sglang_pr_dp.groups``, keyed by
group id), KV state from SGLang's own accounting (``sglang_pr_kv``). The killed-worker test
kills a worker, so it runs last.
"""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest
import requests

from sglang_pr.deepconf.config import DeepConfConfig
from sglang_pr.deepconf.server_backend import BranchRejected, check_group_capacity, \
    sglang_error_field
from sglang_pr.server.kv_accounting import is_idle_and_clean, kv_state, wait_idle_and_clean

KV_TOKENS = 4096
WORKER_ARGS = ["--max-total-tokens", str(KV_TOKENS)]
ENV = {"SGLANG_PR_SEEDED_SAMPLING": "1"}
SMALL = {"method": "sc", "budget": 3, "window": 4, "k": 5}  # a tiny group: 3 traces


def _groups(url: str) -> set[str]:
    states = requests.get(url + "/server_info", timeout=30).json()["internal_states"]
    return {g for s in states for g in s["sglang_pr_dp"]["groups"]}


def _new_groups(cluster, before: list[set[str]]) -> list[set[str]]:
    """Per worker: the groups that reached it since ``before``."""
    return [_groups(u) - b for u, b in zip(cluster.worker_urls, before)]


def _snapshot(cluster) -> list[set[str]]:
    return [_groups(u) for u in cluster.worker_urls]


# --- no server: the capacity rule ------------------------------------------------------------

def test_group_over_one_workers_kv_is_refused_naming_the_field():
    cfg = DeepConfConfig(budget=8, width=64)
    check_group_capacity(cfg, prompt_tokens=96, max_new_tokens=500, capacity=4096)  # 4096 fits
    with pytest.raises(BranchRejected) as e:
        check_group_capacity(cfg, prompt_tokens=97, max_new_tokens=500, capacity=4096)
    assert e.value.field == "deepconf.budget" and "4097 KV tokens" in str(e.value)
    assert str(e.value).startswith("deepconf.budget: 8 traces at once")
    # width below budget: width sets how many run at once, so it is the field to lower
    with pytest.raises(BranchRejected) as e:
        check_group_capacity(DeepConfConfig(budget=64, width=16), 0, 500, 4096)
    assert e.value.field == "deepconf.width"
    # the OpenAI route names the field from SGLang parameter names in the message: none here
    assert sglang_error_field(str(e.value)) == ""
    check_group_capacity(cfg, 10, None, 4096)  # no token limit: left to SGLang
    check_group_capacity(cfg, 10, 10**6, None)  # capacity unknown
    # one branch over the context: SGLang's own refusal names max_new_tokens, not the group
    check_group_capacity(cfg, 10, 10**6, 4096, context_len=8192)
    with pytest.raises(BranchRejected):  # within the context, over the pool: the group's size
        check_group_capacity(cfg, 10, 4000, 4096, context_len=8192)


# --- the cluster -------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    pytest.importorskip("smg", reason="needs the router extra (smg)")
    from sglang_pr.server.cluster import start_cluster

    c = start_cluster(2, WORKER_ARGS, env=ENV, log_dir=tmp_path_factory.mktemp("cluster"))
    try:
        yield c
    finally:
        c.stop()


@pytest.fixture(scope="module")
def client(cluster):
    openai = pytest.importorskip("openai")
    return openai.OpenAI(base_url=cluster.url + "/v1", api_key="none", max_retries=0,
                         timeout=120)


@pytest.mark.server
@pytest.mark.slow
def test_openai_extra_body_groups_run_whole_on_one_worker(cluster, client):
    before = _snapshot(cluster)
    done = client.completions.create(
        model=cluster.model_id, prompt="Q: 4+5\nA:", max_tokens=16, temperature=1.0,
        extra_body={"deepconf": SMALL})
    totals = done.model_extra["metadata"]["deepconf"]["totals"]
    assert totals["traces_started"] == 3 and done.usage.completion_tokens > 0
    chat = client.chat.completions.create(
        model=cluster.model_id, messages=[{"role": "user", "content": "4+5?"}], max_tokens=16,
        extra_body={"deepconf": SMALL})
    assert chat.model_extra["metadata"]["deepconf"]["totals"]["traces_started"] == 3
    new = _new_groups(cluster, before)
    assert sum(len(g) for g in new) == 2, new  # two groups, each on exactly one worker
    assert not (new[0] & new[1])
    # the worker's own 400 comes back through the router, naming the field
    import openai

    with pytest.raises(openai.BadRequestError) as e:
        client.completions.create(model=cluster.model_id, prompt="x", max_tokens=4,
                                  extra_body={"deepconf": {"budget": 0}})
    assert e.value.body["param"] == "deepconf.budget"


@pytest.mark.server
@pytest.mark.slow
def test_generate_with_custom_params_and_group_route_needs_a_worker(cluster):
    out = requests.post(cluster.url + "/generate", timeout=120, json={
        "text": "Q: 1+2\nA:", "sampling_params": {
            "max_new_tokens": 8, "custom_params": {"deepconf": {"window": 4, "k": 5}}}}).json()
    assert "deepconf" in out["meta_info"], out
    body = {"text": "Q: 1+2\nA:", "sampling_params": {"max_new_tokens": 8}, "deepconf": SMALL}
    via_router = requests.post(cluster.url + "/sglang_pr/deepconf/group", json=body, timeout=60)
    assert via_router.status_code == 404  # smg forwards no plugin route: use a worker's own
    direct = requests.post(cluster.worker_urls[0] + "/sglang_pr/deepconf/group", json=body,
                           timeout=120)
    assert direct.status_code == 200 and direct.json()["totals"]["traces_started"] == 3
    # ... or the same group through the router's OpenAI route (what deepconf_group can fall
    # back to), in the group route's shape
    from sglang_pr.server.cluster import group_via_openai

    res = group_via_openai(cluster.url, "Q: 1+2\nA:", SMALL,
                           {"max_new_tokens": 8, "sampling_seed": 3}, model=cluster.model_id)
    assert res["totals"]["traces_started"] == 3 and "answer" in res and "text" in res


@pytest.mark.server
@pytest.mark.slow
def test_same_prompt_keeps_landing_on_the_same_worker(cluster, client):
    """cache_aware: a prompt's later groups go where its prefix is cached."""
    placed = []
    for i in range(3):
        prompt = f"Q: {17 + i * 11}*{3 + i} then add {i}, step by step\nA:"
        where = []
        for _ in range(3):
            before = _snapshot(cluster)
            client.completions.create(model=cluster.model_id, prompt=prompt, max_tokens=8,
                                      extra_body={"deepconf": SMALL})
            new = _new_groups(cluster, before)
            where.append([i for i, g in enumerate(new) if g])
        placed.append(where)
        assert all(w == where[0] and len(w) == 1 for w in where), placed


@pytest.mark.server
@pytest.mark.slow
def test_frontend_fork_and_vote_through_the_router(cluster):
    sgl = pytest.importorskip("sglang")
    from sglang_pr.frontends import vote

    @sgl.function
    def fork_vote(s, prompt):
        s += prompt
        forks = s.fork(4)
        forks += sgl.gen("answer", max_tokens=12, temperature=0.8)
        s += vote(forks, "answer")

    s = fork_vote.run(prompt="Q: 6+7\nA:", backend=sgl.RuntimeEndpoint(cluster.url))
    assert s.error() is None
    res = s["answer_vote"]
    assert len(res["answers"]) == 4 and s["answer"] == (res["answer"] or "")


@pytest.mark.server
@pytest.mark.slow
def test_frontend_deepconf_group_falls_back_to_the_openai_route(cluster):
    """smg 404s the group route; deepconf_group then sends the group as one /v1/completions."""
    sgl = pytest.importorskip("sglang")
    from sglang_pr.frontends import deepconf_group

    @sgl.function
    def online(s, prompt):
        s += prompt
        s += deepconf_group(s, "answer", sampling_params={"max_new_tokens": 8,
                                                          "sampling_seed": 5}, **SMALL)

    before = _snapshot(cluster)
    s = online.run(prompt="Q: 4+4\nA:", backend=sgl.RuntimeEndpoint(cluster.url))
    assert s.error() is None, s.error()
    res = s["answer_group"]
    assert res["totals"]["traces_started"] == 3 and s["answer"] == (res["answer"] or "")
    assert sum(1 for g in _new_groups(cluster, before) if g) == 1  # whole, on one worker


def _wait(pred, timeout_s: float, poll_s: float = 0.1) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(poll_s)
    return False


LONG = {"method": "sc", "budget": 6, "width": 6, "window": 8, "k": 5,
        "consensus_stop": False}
# 6 x 600 tokens + prompt < 4096; ignore_eos: every branch runs all 600 (tens of seconds here)
LONG_BODY = {"max_tokens": 600, "temperature": 1.0, "ignore_eos": True}


def _long_group(cluster, prompt: str, timeout_s: float):
    return requests.post(cluster.url + "/v1/completions", timeout=(10, timeout_s), json={
        "model": cluster.model_id, "prompt": prompt, **LONG_BODY, "deepconf": LONG})


def _worker_running(url: str) -> bool:
    return kv_state(url)["running_requests"] > 0


@pytest.mark.server
@pytest.mark.slow
def test_client_that_drops_mid_group_frees_every_branch(cluster):
    before = _snapshot(cluster)
    with pytest.raises(requests.ReadTimeout):  # hang up while the group runs
        _long_group(cluster, "Q: 8+8, then again\nA:", timeout_s=4)
    assert _wait(lambda: any(_new_groups(cluster, before)), 10, poll_s=0.5)
    new = _new_groups(cluster, before)
    owner = [i for i, g in enumerate(new) if g]
    assert len(owner) == 1, new  # the group reached one worker
    url = cluster.worker_urls[owner[0]]
    # Freed, not finished: 6 x 600 tokens take far longer than this on any CPU here, and the
    # worker notices the hang-up within its 0.5 s disconnect poll.
    state = wait_idle_and_clean(url, timeout_s=10)
    assert is_idle_and_clean(state), state


@pytest.mark.server
@pytest.mark.slow
def test_group_over_a_workers_capacity_is_400_through_the_router(cluster, client):
    import openai

    with pytest.raises(openai.BadRequestError) as e:  # 8 x 600 tokens > 4096
        client.completions.create(model=cluster.model_id, prompt="Q: 1\nA:", max_tokens=600,
                                  extra_body={"deepconf": {"method": "sc", "budget": 8}})
    assert str(e.value.body["message"]).startswith("deepconf.budget:"), e.value.body
    assert e.value.body["param"] == "deepconf.budget"
    for url in cluster.worker_urls:
        assert wait_idle_and_clean(url, timeout_s=10)["running_requests"] == 0


@pytest.mark.server
@pytest.mark.slow
def test_killed_worker_mid_group_is_a_clear_error_and_the_other_serves(cluster):
    """Runs last: it kills a worker."""
    prompt = "Q: 9+9, and once more\nA:"
    result: dict = {}

    def run():
        t = time.monotonic()
        try:
            r = _long_group(cluster, prompt, timeout_s=120)
            result["status"], result["body"] = r.status_code, r.text
        except requests.RequestException as e:
            result["error"] = repr(e)
        result["s"] = time.monotonic() - t

    before = _snapshot(cluster)
    thread = threading.Thread(target=run)
    thread.start()
    assert _wait(lambda: any(_new_groups(cluster, before)), 60), "the group never started"
    victim = next(i for i, g in enumerate(_new_groups(cluster, before)) if g)
    assert _wait(lambda: _worker_running(cluster.worker_urls[victim]), 30)
    handle = next(h for h in cluster.workers if h.base_url == cluster.worker_urls[victim])
    os.killpg(handle.proc.pid, signal.SIGKILL)
    thread.join(60)
    assert not thread.is_alive(), "the client hangs after its worker died"
    assert result.get("status", 0) >= 500 or "error" in result, result
    if "body" in result:  # smg's error names the worker it lost (and the group never hangs)
        assert cluster.worker_urls[victim] in result["body"], result
    handle.stop()
    survivor = cluster.worker_urls[1 - victim]

    failed = []

    def served() -> bool:
        t = time.monotonic()
        r = requests.post(cluster.url + "/generate", timeout=60, json={
            "text": f"Q: {time.monotonic_ns() % 97}\nA:", "sampling_params": {"max_new_tokens": 4}})
        if r.status_code != 200:  # sent to the dead worker: an immediate 5xx, never a hang
            failed.append((r.status_code, time.monotonic() - t))
        return r.status_code == 200

    # Until its circuit breaker opens (3 refusals) or its health check fails, the router may
    # still pick the dead worker; after that every request is the survivor's.
    assert _wait(lambda: all(served() for _ in range(5)), 60, poll_s=0.2), failed
    assert all(code >= 500 and s < 10 for code, s in failed), failed
    state = wait_idle_and_clean(survivor, timeout_s=30)
    assert is_idle_and_clean(state), state
