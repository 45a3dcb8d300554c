"""End to end through SGLang's server: cascade decode and extend give what torch_native gives.

Two servers with the shipped model: ``--attention-backend cascade`` (a low ``min_prefix_tokens``
so the task's short prompts form groups) and ``--attention-backend torch_native``. The cascade
server's stats file proves grouping really happened (at decode, and for the branches' extends
over the cached prompt), so output equality is not vacuous.
"""

from __future__ import annotations

import json
import threading

import pytest
import requests

from sglang_pr.model import task
from sglang_pr.server.kv_accounting import is_idle_and_clean, wait_idle_and_clean

pytestmark = pytest.mark.server

MAX_LOGPROB_DIFF = 1e-4  # float32 model; attention differs by ~1e-6 between the backends


@pytest.fixture(scope="module")
def stats_path(tmp_path_factory):
    return tmp_path_factory.mktemp("cascade") / "stats.json"


@pytest.fixture(scope="module")
def servers(sglang_server_factory, stats_path):
    cfg = {"min_prefix_tokens": 8, "stats_path": str(stats_path)}
    casc = sglang_server_factory("cascade", extra_args=["--attention-backend", "cascade"],
                                 env={"SGLANG_PR_CASCADE": json.dumps(cfg)})
    flat = sglang_server_factory("torch_native", extra_args=["--attention-backend", "torch_native"])
    yield casc.base_url, flat.base_url
    sglang_server_factory.release("cascade", "torch_native")  # this module's own


def _stats(path) -> dict:
    return json.loads(path.read_text()) if path.exists() else {"cascade_batches": 0}


def _generate(url: str, payload: dict) -> list[dict]:
    r = requests.post(url + "/generate", json=payload, timeout=300)
    assert r.status_code == 200, r.text
    out = r.json()
    return out if isinstance(out, list) else [out]


def _assert_same(casc: list[dict], flat: list[dict]) -> None:
    assert [o["text"] for o in casc] == [o["text"] for o in flat]
    for a, b in zip(casc, flat):
        la = [t[0] for t in a["meta_info"]["output_token_logprobs"]]
        lb = [t[0] for t in b["meta_info"]["output_token_logprobs"]]
        assert len(la) == len(lb) and max(abs(x - y) for x, y in zip(la, lb)) <= MAX_LOGPROB_DIFF


def _greedy(max_new_tokens: int) -> dict:
    return {"temperature": 0.0, "max_new_tokens": max_new_tokens, "ignore_eos": True}


def test_16_way_fork_greedy_outputs_identical(servers, stats_path):
    casc_url, flat_url = servers
    before = _stats(stats_path)["cascade_batches"]
    payload = {"text": task.heldout_set(1)[0].prompt, "sampling_params": {**_greedy(24), "n": 16},
               "return_logprob": True}
    casc, flat = _generate(casc_url, payload), _generate(flat_url, payload)
    assert len(casc) == 16
    _assert_same(casc, flat)
    stats = _stats(stats_path)
    assert stats["cascade_batches"] - before >= 10  # most of the 24 steps were grouped
    assert 16 in stats["group_sizes_seen"]
    # The branches' one-token extends of the cached prompt went through the backend's own
    # extend path, the prompt attended once for several of them (SGLang batches the n copies).
    assert stats["extend_grouped_batches"] >= 1 and max(stats["extend_groups_seen"]) >= 2


def test_group_shrinking_mid_decode_with_distinct_branches(servers, stats_path):
    # Branches = the prompt plus a different hint each (as a frontend fork adds text), finishing
    # at different lengths, so the group loses members step by step while the rest decode on.
    casc_url, flat_url = servers
    prompt = task.heldout_set(2)[1].prompt
    for url in servers:  # put the shared prompt in each radix cache first
        _generate(url, {"text": prompt, "sampling_params": _greedy(1)})
    payload = {"text": [prompt + str(i % 10) * 2 for i in range(12)],
               "sampling_params": [_greedy(4 + 2 * i) for i in range(12)],
               "return_logprob": True}
    before = _stats(stats_path)
    casc, flat = _generate(casc_url, payload), _generate(flat_url, payload)
    _assert_same(casc, flat)
    after = _stats(stats_path)
    seen = set(after["group_sizes_seen"]) - set(before.get("group_sizes_seen", []))
    assert len(seen) >= 3, seen  # the group was attended at several sizes as it shrank
    # Two-token extends (the hint) over the shared cached prompt: the
    # causal own part merged with the shared prefix, still the same greedy text as torch_native.
    assert after["extend_grouped_batches"] > before.get("extend_grouped_batches", 0)


def test_mixed_batch_of_fork_and_unrelated_requests(servers, stats_path):
    casc_url, flat_url = servers
    # Three prompts that differ within their first 7 characters (BOS + 7 < 8 tokens): the two
    # loners can share no qualifying prefix with each other or with the fork.
    prompts = list({p.prompt[:7]: p.prompt for p in task.heldout_set(64)}.values())[:3]
    assert len(prompts) == 3
    fork = {"text": prompts[0], "sampling_params": {**_greedy(20), "n": 8},
            "return_logprob": True}
    loners = {"text": prompts[1:], "sampling_params": _greedy(20), "return_logprob": True}
    before = _stats(stats_path).get("mixed_batches", 0)
    results = {}
    for url in servers:
        # Both requests in flight together, so decode batches mix grouped and flat rows.
        threads = [threading.Thread(target=lambda k=k, p=p: results.__setitem__(
            (url, k), _generate(url, p))) for k, p in (("fork", fork), ("loners", loners))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    for k in ("fork", "loners"):
        _assert_same(results[(casc_url, k)], results[(flat_url, k)])
    assert _stats(stats_path)["mixed_batches"] > before


def test_no_kv_leak_after_cascade_decoding(servers):
    state = wait_idle_and_clean(servers[0])
    assert is_idle_and_clean(state), state
