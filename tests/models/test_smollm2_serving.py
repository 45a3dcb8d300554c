"""A real chat model served: SmolLM2-135M-Instruct by name, through ``sglang-pr serve``.

One server for the module (``--model-path smollm2-135m``: the name is resolved by serve,
materialised on first use; the CPU default backend, cascade), stopped when the module ends.
Each case checks KV is idle afterwards:

* a chat fork + vote program (``sgl.user`` / ``sgl.assistant``, ``fork``, the project's
  ``vote`` with DeepConf confidences);
* the openai client on chat completions with ``extra_body={"deepconf": ...}``;
* cascade greedy identity: a 16-way greedy fork of a real-text chat prompt gives, in every
  branch, exactly transformers' greedy tokens for the same model in this process, and the
  cascade backend really attended the shared prefix once for the group (its stats file).

Short outputs: SmolLM2 decodes at ~100 ms a step on 2 cores, so the module is one server start
plus well under a minute of decoding.
"""

from __future__ import annotations

import json

import openai
import pytest
import requests
import sglang as sgl
import torch

from sglang_pr.data.prompts import format_prompts
from sglang_pr.deepconf.extract import last_number
from sglang_pr.frontends import DeepConfRuntimeEndpoint, vote
from sglang_pr.server.kv_accounting import is_idle_and_clean, wait_idle_and_clean
from sglang_pr.server.launcher import launch

pytestmark = [pytest.mark.smollm2, pytest.mark.server, pytest.mark.slow]

FORK = 16  # branches of the greedy fork
MAX_NEW = 16  # greedy tokens compared with transformers
REAL_TEXT = ("The lighthouse keeper climbed the spiral stairs every evening to light the lamp. "
             "Ships passing the rocky coast relied on its beam through fog and storms. "
             "Write one sentence about what the keeper saw from the top.")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    stats = tmp_path_factory.mktemp("smollm2") / "cascade_stats.json"
    # The cascade rule groups a shared span of >= 64 tokens by default; the chat prompt here is
    # ~80 tokens, so 16 is set to make sure the test exercises the grouped path, not the flat.
    env = {"SGLANG_PR_SEEDED_SAMPLING": "1",
           "SGLANG_PR_CASCADE": json.dumps({"min_prefix_tokens": 16,
                                            "stats_path": str(stats)})}
    with launch(model_path="smollm2-135m", env=env, timeout_s=900,
                extra_args=["--max-total-tokens", "4096", "--sleep-on-idle"]) as handle:
        handle.cascade_stats = stats
        yield handle


@pytest.fixture(scope="module")
def url(server) -> str:
    return server.base_url


def _assert_kv_idle(url: str) -> None:
    state = wait_idle_and_clean(url, timeout_s=60)
    assert is_idle_and_clean(state), state


def test_served_by_name_with_the_cascade_backend(url):
    info = requests.get(url + "/server_info", timeout=30).json()
    assert info["model_path"].endswith("smollm2-135m") and info["model_path"] != "smollm2-135m"
    assert info["attention_backend"] == "cascade"


@sgl.function
def chat_fork_vote(s, question, branches):
    s += sgl.user(question)
    forks = s.fork(branches)
    forks += sgl.assistant(sgl.gen("answer", max_tokens=24, temperature=0.7))
    s += vote(forks, "answer", method="deepconf_low", extractor="last_number")


def test_chat_fork_and_vote_program(url):
    # SGLang picks a frontend chat template by model path; a folder named smollm2-135m matches
    # none, and SmolLM2's own template is ChatML.
    backend = DeepConfRuntimeEndpoint(url, deepconf={"window": 4}, chat_template_name="chatml")
    s = chat_fork_vote.run(question="What is 6 plus 3?", branches=6, backend=backend)
    assert s.error() is None
    res = s["answer_vote"]
    assert res["method"] == "deepconf_low" and len(res["answers"]) == 6
    assert all(isinstance(c, float) for c in res["confidences"])  # tracked by the server
    assert res["answer"] is None or res["answer"] in res["answers"]
    kept = [a for a, k in zip(res["answers"], res["kept"]) if k and a is not None]
    assert res["answer"] is None or res["answer"] in kept
    assert s.text().startswith("<|im_start|>user\nWhat is 6 plus 3?<|im_end|>")
    _assert_kv_idle(url)


def test_openai_chat_with_extra_body_deepconf(url):
    client = openai.OpenAI(base_url=url + "/v1", api_key="unused")
    r = client.chat.completions.create(
        model="default", messages=[{"role": "user", "content": "What is 4 times 3?"}],
        max_tokens=24, temperature=0.7,
        extra_body={"deepconf": {"method": "deepconf_low", "budget": 6, "n_init": 3,
                                 "window": 4, "extractor": "last_number"}})
    meta = r.model_extra["metadata"]["deepconf"]
    totals = meta["totals"]
    assert 3 <= totals["traces_started"] <= 6
    assert r.usage.completion_tokens == totals["generated_tokens"] == sum(
        t["tokens"] for t in meta["traces"])
    content = r.choices[0].message.content
    assert isinstance(content, str) and content
    if meta["answer"] is not None:  # the returned choice is a trace that gave the answer
        assert last_number(content) == meta["answer"]
    _assert_kv_idle(url)


@pytest.fixture(scope="module")
def greedy_reference(server):
    """(prompt ids, transformers' greedy ids, EOS id) for the real-text chat prompt, float32
    as served. EOS is dropped where it appears: SGLang may leave it out of output_ids."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from sglang_pr.models import resolve_model_path

    path = str(resolve_model_path("smollm2-135m"))
    prompt = format_prompts(path, [REAL_TEXT])[0]
    tok = AutoTokenizer.from_pretrained(path)
    ids = tok(prompt, return_tensors="pt", add_special_tokens=False)["input_ids"]  # [1, T]
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    with torch.no_grad():
        out = model.generate(ids, do_sample=False, max_new_tokens=MAX_NEW,
                             pad_token_id=tok.eos_token_id)  # [1, T + <= MAX_NEW]
    want = [t for t in out[0, ids.shape[1]:].tolist() if t != tok.eos_token_id]
    return ids[0].tolist(), want, tok.eos_token_id


def test_cascade_greedy_fork_matches_transformers(url, server, greedy_reference):
    prompt_ids, want, eos = greedy_reference
    assert len(prompt_ids) >= 32  # a shared span worth grouping
    r = requests.post(url + "/generate", timeout=600, json={
        "input_ids": prompt_ids,
        "sampling_params": {"temperature": 0.0, "n": FORK, "max_new_tokens": MAX_NEW}})
    r.raise_for_status()
    outs = r.json()
    assert len(outs) == FORK
    for o in outs:
        assert [t for t in o["output_ids"] if t != eos] == want, (o["text"], want)
    stats = json.loads(server.cascade_stats.read_text())
    assert stats["cascade_batches"] > 0 and FORK in stats["group_sizes_seen"], stats
    _assert_kv_idle(url)
