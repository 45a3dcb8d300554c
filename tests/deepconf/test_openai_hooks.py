"""Runtime: the openai client with extra_body runs a group; bad settings are 400s."""

import threading
import time

import openai
import pytest
import requests

from sglang_pr.model.task import extract_answer, heldout_set
from sglang_pr.server.kv_accounting import is_idle_and_clean, kv_state, wait_idle_and_clean

pytestmark = pytest.mark.server
PROMPT = heldout_set(1)[0].prompt


@pytest.fixture(scope="module")
def client(deepconf_url):
    return openai.OpenAI(base_url=deepconf_url + "/v1", api_key="unused")


def test_completions_group_with_extra_body(client):
    p = heldout_set(1)[0]
    r = client.completions.create(
        model="default", prompt=p.prompt, max_tokens=64, temperature=0.8,
        extra_body={"deepconf": {"method": "deepconf_low", "budget": 6, "n_init": 3,
                                 "window": 4}})
    meta = r.model_extra["metadata"]["deepconf"]
    totals = meta["totals"]
    assert r.usage.completion_tokens == totals["generated_tokens"] == sum(
        t["tokens"] for t in meta["traces"])
    assert totals["traces_started"] >= 3 and len(meta["traces"]) == totals["traces_started"]
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens
    if meta["answer"] is not None:
        assert str(extract_answer(r.choices[0].text)) == meta["answer"]


def test_chat_group_with_extra_body(client):
    r = client.chat.completions.create(
        model="default", messages=[{"role": "user", "content": heldout_set(2)[1].prompt}],
        max_tokens=48, extra_body={"deepconf": {"method": "sc", "budget": 3}})
    meta = r.model_extra["metadata"]["deepconf"]
    assert meta["totals"]["traces_started"] == 3
    assert r.usage.completion_tokens == meta["totals"]["generated_tokens"]
    assert isinstance(r.choices[0].message.content, str)


@pytest.mark.parametrize("extra,param", [
    ({"deepconf": {"tau": 1.5}}, "deepconf.tau"),
    ({"deepconf": {"budget": 2, "n_init": 4}}, "deepconf.n_init"),
    ({"deepconf": {"wat": True}}, "deepconf.wat"),
    ({"deepconf": {"k": 0}}, "deepconf.k"),
    ({"deepconf": {"window": 0}}, "deepconf.window"),
    ({"deepconf": {"method": "deepconf", "eta": 150}}, "deepconf.eta"),
    ({"deepconf": {"budget": 0}}, "deepconf.budget"),
    ({"deepconf": {}, "n": 2}, "n"),
    ({"deepconf": {}, "n": 0}, "n"),
    ({"custom_params": {"deepconf": {"threshold": 3.0}}}, "custom_params.deepconf.threshold"),
    # the requests a new user's 60 malformed ones found (issue 11), and their neighbours
    ({"deepconf": {"extractor": "regex", "answer_regex": "("}}, "deepconf.answer_regex"),
    ({"deepconf": {"budget": 10**9}}, "deepconf.budget"),
    ({"deepconf": {"k": 10**6}}, "deepconf.k"),
    ({"deepconf": []}, "deepconf"),
    ({"custom_params": {"deepconf": []}}, "custom_params.deepconf"),
    ({"custom_params": {"deepconf": {"k": 10**6}}}, "custom_params.deepconf.k"),
    ({"deepconf": {"budget": 2, "n_init": 1}, "max_tokens": 10**6}, "max_tokens"),
    ({"deepconf": {"budget": 2, "n_init": 1}, "top_k": 2**40}, "top_k"),
    ({"deepconf": {"budget": 2, "n_init": 1}, "temperature": -1}, "temperature"),
    ({"deepconf": {"budget": 2, "n_init": 1}, "prompt": []}, "prompt"),
    ({"deepconf": {"budget": 2, "n_init": 1}, "prompt": [1, 2, 10**6]}, "prompt"),
])
def test_bad_settings_are_400_naming_the_field(client, extra, param):
    with pytest.raises(openai.BadRequestError) as ei:
        client.completions.create(model="default", prompt=extra.pop("prompt", PROMPT),
                                  max_tokens=extra.pop("max_tokens", 4), extra_body=extra)
    assert ei.value.status_code == 400
    body = ei.value.body
    assert body["param"] == param and body["message"].startswith(param + ": "), body


def test_plain_requests_are_untouched(client):
    r = client.completions.create(model="default", prompt=PROMPT, max_tokens=8)
    assert "deepconf" not in ((r.model_extra or {}).get("metadata") or {})
    assert r.usage.completion_tokens <= 8


@pytest.mark.parametrize("messages,extra,param", [
    ([{"role": "user", "content": PROMPT}], {"method": "sc", "budget": 2, "n_init": 0},
     "deepconf.n_init"),
    ([], {"method": "sc", "budget": 2}, "messages"),
    ([{"role": "user", "content": PROMPT}], {"budget": 2, "n_init": 1, "k": 101}, "deepconf.k"),
])
def test_chat_bad_settings_are_400_naming_the_field(client, messages, extra, param):
    with pytest.raises(openai.BadRequestError) as ei:
        client.chat.completions.create(model="default", messages=messages, max_tokens=4,
                                       extra_body={"deepconf": extra})
    assert ei.value.status_code == 400 and ei.value.body["param"] == param, ei.value.body
    assert ei.value.body["message"].startswith(param + ": ")


def test_a_lone_surrogate_is_400_naming_the_body(deepconf_url):
    """SGLang's own JSON parser refuses it before any hook (its message gives the body's loc)."""
    for path, body in [("/v1/completions", {"prompt": "Q: \udcff"}),
                       ("/v1/chat/completions",
                        {"messages": [{"role": "user", "content": "Q: \udcff"}]})]:
        r = requests.post(deepconf_url + path, json={
            "model": "default", "max_tokens": 4, "deepconf": {"budget": 2, "n_init": 1}, **body},
            timeout=60)
        assert r.status_code == 400 and "'body'" in r.json()["message"], r.text


def test_client_disconnect_mid_group_frees_every_branch(deepconf_url):
    body = {"model": "default", "prompt": PROMPT, "max_tokens": 400, "temperature": 1.0,
            "ignore_eos": True, "deepconf": {"method": "sc", "budget": 64, "width": 16}}
    hung_up = []

    def client():  # hangs up (read timeout) while the group is running
        try:
            requests.post(deepconf_url + "/v1/completions", json=body, timeout=3)
        except requests.ReadTimeout:
            hung_up.append(True)

    t = threading.Thread(target=client)
    t.start()
    deadline = time.monotonic() + 60
    while kv_state(deepconf_url)["running_requests"] == 0:  # the group's branches are running
        assert time.monotonic() < deadline, "the group never started running"
        time.sleep(0.1)
    t.join()
    assert hung_up
    start = time.monotonic()
    # 64 x 400 tokens would take minutes; the group is cancelled and its branches freed at once
    state = wait_idle_and_clean(deepconf_url, timeout_s=30)
    assert is_idle_and_clean(state), state
    assert time.monotonic() - start < 30
