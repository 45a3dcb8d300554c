"""The default server: SGLang's own server on the CPU, shipped model, plugin loaded."""

from __future__ import annotations

import uuid

import requests

from sglang_pr.cli.demo import fork_and_vote_program
from sglang_pr.model import task
from sglang_pr.server.kv_accounting import is_idle_and_clean, wait_idle_and_clean


def _generate(base_url: str, payload: dict) -> dict | list:
    r = requests.post(base_url + "/generate", json=payload, timeout=300)
    assert r.status_code == 200, r.text
    return r.json()


def test_plugin_marker_reports_version_features_platform(base_url):
    info = requests.get(base_url + "/sglang_pr/info", timeout=30).json()
    import sglang_pr

    assert info["version"] == sglang_pr.__version__
    assert {"http_routes", "kv_accounting", "cascade_attention"} <= set(info["features"])
    assert info["platform"].endswith("PortableCpuPlatform")
    kv = info["kv"]  # SGLang's own accounting, the same numbers /server_info carries
    assert [r["dp_rank"] for r in kv["ranks"]] == [0]
    assert kv["total_tokens"] == kv["ranks"][0]["total_tokens"] > 0


def test_server_runs_cpu_defaults(base_url):
    state = requests.get(base_url + "/server_info", timeout=30).json()
    assert state["device"] == "cpu"
    assert state["attention_backend"] == "cascade"  # chosen by sglang-pr serve on a CPU
    assert state["sampling_backend"] == "pytorch"
    assert state["dtype"] == "float32"  # the shipped checkpoint is float32


def test_generate_with_n_branches(base_url):
    prompt = task.heldout_set(1)[0].prompt
    out = _generate(base_url, {"text": prompt,
                               "sampling_params": {"n": 4, "temperature": 1.0,
                                                   "max_new_tokens": 24}})
    assert isinstance(out, list) and len(out) == 4
    for branch in out:
        assert branch["meta_info"]["completion_tokens"] >= 1
        assert branch["meta_info"]["finish_reason"]["type"] in {"length", "stop"}


def test_forks_reuse_the_radix_cached_prefix(base_url):
    # A prompt no earlier test sent, so every cached token comes from this request's own prefill.
    prompt = f"Q: {uuid.uuid4().int % 90 + 10} +1 +2 +3 *4 -5 +6 *7\nA:\n" + "x" * 64
    out = _generate(base_url, {"text": prompt,
                               "sampling_params": {"n": 4, "temperature": 1.0,
                                                   "max_new_tokens": 8}})
    prompt_tokens = out[0]["meta_info"]["prompt_tokens"]
    cached = [b["meta_info"]["cached_tokens"] for b in out]
    # SGLang prefills the shared prompt once; each branch then finds it (all but the last
    # token, which is recomputed to get the first logits) in the radix cache.
    assert all(c >= prompt_tokens - 1 for c in cached), (cached, prompt_tokens)


def test_frontend_fork_program_runs_against_the_server(base_url):
    import sglang as sgl

    problems = task.heldout_set(2)
    program = fork_and_vote_program()
    states = program.run_batch(
        [dict(prompt=p.prompt, n=3, max_new_tokens=64, temperature=1.0) for p in problems],
        backend=sgl.RuntimeEndpoint(base_url),
    )
    for state in states:
        assert state.error() is None
        assert len(state["trace"]) == 3 and len(state["tokens"]) == 3
        assert all(t >= 1 for t in state["tokens"])


def test_kv_returns_to_idle_after_requests(base_url):
    prompt = task.heldout_set(3)[2].prompt
    _generate(base_url, {"text": [prompt] * 3,
                         "sampling_params": {"n": 1, "temperature": 1.0, "max_new_tokens": 32}})
    state = wait_idle_and_clean(base_url)
    assert is_idle_and_clean(state), state
