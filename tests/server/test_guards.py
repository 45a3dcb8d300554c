"""sglang_pr/server/guards.py: the two requests SGLang 0.5.23 would crash its scheduler on get
a 400 naming the field on SGLang's own routes, and the server keeps serving."""

from __future__ import annotations

import types

import pytest
import requests

from sglang_pr.model import task
from sglang_pr.server import guards
from sglang_pr.validation import ConfigError


def test_top_k_past_sglangs_whole_vocabulary_value_is_refused():
    guards.check_top_k(1 << 30)  # SGLang's own "whole vocabulary" value passes
    guards.check_top_k(-1)
    with pytest.raises(ConfigError, match=r"^top_k: must be -1 or in \[1, 1073741824\], got 2147483648"):
        guards.check_top_k(1 << 31)


def test_out_of_vocabulary_ids_are_refused_with_the_first_bad_id():
    guards.check_token_ids([0, 5, 9], vocab=10)
    with pytest.raises(ConfigError, match=r"^input_ids: token id 10 is outside .*\[0, 10\)"):
        guards.check_token_ids([1, 10, -1], vocab=10)
    with pytest.raises(ConfigError, match="token id -1"):
        guards.check_token_ids([1, -1], vocab=10)


def test_validate_hook_reads_the_managers_vocabulary():
    manager = types.SimpleNamespace(model_config=types.SimpleNamespace(vocab_size=4))
    guards._before_validate_request(manager, object(), [0, 3])
    guards._before_validate_request(manager, object(), None)  # embeddings: nothing to check
    with pytest.raises(ConfigError, match="token id 4"):
        guards._before_validate_request(manager, object(), [0, 4])


@pytest.mark.server
@pytest.mark.parametrize("payload, field", [
    ({"text": "Q: 1 a+2\nA:\n", "sampling_params": {"top_k": 1 << 31, "max_new_tokens": 2}},
     "top_k"),
    ({"input_ids": [1, 2, 10 ** 6], "sampling_params": {"max_new_tokens": 2}}, "input_ids"),
])
def test_plain_generate_refuses_what_would_crash_the_scheduler(base_url, payload, field):
    r = requests.post(base_url + "/generate", json=payload, timeout=60)
    assert r.status_code == 400, r.text
    assert field in r.text
    ok = requests.post(base_url + "/generate", timeout=120, json={
        "text": task.heldout_set(1)[0].prompt, "sampling_params": {"max_new_tokens": 4}})
    assert ok.status_code == 200, ok.text  # the scheduler is still alive


@pytest.mark.server
def test_openai_completion_with_huge_top_k_is_a_400(base_url):
    r = requests.post(base_url + "/v1/completions", timeout=60, json={
        "model": requests.get(base_url + "/v1/models", timeout=30).json()["data"][0]["id"],
        "prompt": "Q: 1 a+2\nA:\n", "max_tokens": 2, "top_k": 1 << 31})
    assert r.status_code == 400, r.text
    assert "top_k" in r.text
