"""The group route — answers, 400s, its OpenAPI entry, seeds, KV back to idle after many
groups, disconnects (on the served model), and its body checks (without a server)."""

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from sglang_pr.deepconf.config import ConfigError
from sglang_pr.deepconf.routes import GroupRequest, parse_group_body
from sglang_pr.deepconf.server_backend import sglang_error_field
from sglang_pr.model.task import heldout_set
from sglang_pr.server.kv_accounting import is_idle_and_clean, kv_state, wait_idle_and_clean

server = pytest.mark.server
PATH = "/sglang_pr/deepconf/group"
SP = {"max_new_tokens": 64, "temperature": 0.8, "top_p": 0.95}
VOCAB = 100  # the shipped model's


def group(url, prompt, deepconf, sp=SP, timeout=300, **extra):
    return requests.post(url + PATH, json={"text": prompt, "sampling_params": sp,
                                           "deepconf": deepconf, **extra}, timeout=timeout)


@server
def test_group_result_shape_and_prefix_sharing(deepconf_url):
    p = heldout_set(1)[0]
    r = group(deepconf_url, p.prompt, {"method": "deepconf_low", "budget": 8, "n_init": 4,
                                       "window": 4, "width": 8})
    assert r.status_code == 200
    d = r.json()
    t = d["totals"]
    assert 4 <= t["traces_started"] <= 8 == d["config"]["budget"]
    assert t["generated_tokens"] == sum(tr["tokens"] for tr in d["traces"])
    assert d["threshold"] is not None
    for tr in d["traces"]:
        assert tr["confidence"]["n_tokens"] == tr["tokens"]
        assert tr["cached_tokens"] >= t["prompt_tokens"] - 1  # the prompt came from the cache
        assert tr["voted"] == (tr["finish_reason"]["type"] in ("stop", "length")
                               and tr["answer"] is not None
                               and tr["confidence"]["lowest_group"] >= d["threshold"])
    if d["answer"] is not None:
        assert d["answer"] == max(d["vote"]["scores"], key=d["vote"]["scores"].get)


@server
def test_sc_is_the_same_api_without_deepconf(deepconf_url):
    d = group(deepconf_url, heldout_set(2)[1].prompt, {"method": "sc", "budget": 6,
                                                       "window": 4}).json()
    assert d["threshold"] is None and d["totals"]["traces_started"] == 6
    assert d["totals"]["stopped_early"] == 0 and not d["totals"]["consensus_reached"]
    assert all(s == int(s) for s in d["vote"]["scores"].values())  # plain majority


@pytest.mark.parametrize("body,field", [
    ({"deepconf": {"tau": 0}}, "deepconf.tau"),
    ({"deepconf": {"tau": 1.01}}, "deepconf.tau"),
    ({"deepconf": {"eta": 100.5, "method": "deepconf"}}, "deepconf.eta"),
    ({"deepconf": {"eta": 0, "method": "deepconf"}}, "deepconf.eta"),
    ({"deepconf": {"n_init": 9, "budget": 4}}, "deepconf.n_init"),
    ({"deepconf": {"budget": 0}}, "deepconf.budget"),
    ({"deepconf": {"k": 0}}, "deepconf.k"),
    ({"deepconf": {"window": -3}}, "deepconf.window"),
    ({"deepconf": {"unknown": 1}}, "deepconf.unknown"),
    ({"nope": 1}, "nope"),
    ({"sampling_params": {"n": 4}}, "sampling_params.n"),
    ({"sampling_params": {"n": 0}}, "sampling_params.n"),
    # the requests a new user's 60 malformed ones found (issue 11), and their neighbours
    ({"deepconf": {"extractor": "regex", "answer_regex": "("}}, "deepconf.answer_regex"),
    ({"text": "Q: 1 a+1\udcff"}, "text"),
    ({"deepconf": {"budget": 10**9}}, "deepconf.budget"),
    ({"deepconf": {"method": "sc", "budget": 8, "width": 10**6}}, "deepconf.width"),
    ({"sampling_params": {"max_new_tokens": -5}}, "sampling_params.max_new_tokens"),
    ({"sampling_params": {"max_new_tokens": 10**6}}, "sampling_params.max_new_tokens"),
    ({"deepconf": {"k": 10**6}}, "deepconf.k"),
    ({"deepconf": {"k": VOCAB + 1}}, "deepconf.k"),
    ({"deepconf": []}, "deepconf"),
    ({"deepconf": "sc"}, "deepconf"),
    ({"sampling_params": {"temperature": float("nan")}}, "sampling_params.temperature"),
    ({"sampling_params": {"top_k": 2**40}}, "sampling_params.top_k"),  # kills SGLang's sampler
    ({"sampling_params": {"bogus": 1}}, "sampling_params.bogus"),
    ({"sampling_params": {"custom_params": []}}, "sampling_params.custom_params"),
    ({"sampling_params": {"max_new_tokens": 4, "min_new_tokens": 9}},
     "sampling_params.min_new_tokens"),
    ({"sampling_params": []}, "sampling_params"),
    ({"text": None, "input_ids": [1, 2, VOCAB]}, "input_ids"),  # past the embedding table
    ({"input_ids": [1, 2]}, "text"),  # both prompts
    ({"stream": "yes"}, "stream"),
])
@server
def test_bad_group_input_is_400_naming_the_field(deepconf_url, body, field):
    full = {"text": heldout_set(1)[0].prompt, "sampling_params": {"max_new_tokens": 4},
            "deepconf": {"method": "sc", "budget": 2}, **body}
    # NaN on purpose (Python's JSON parser, behind this route, reads it)
    r = requests.post(deepconf_url + PATH, data=json.dumps(full), timeout=60,
                      headers={"Content-Type": "application/json"})
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["field"] == field and err["message"].startswith(field + ": "), err


@server
@pytest.mark.parametrize("data", [b"not json", b"{\"text\": \"\xff\"}", b"",
                                  b"[" * 100_000 + b"]" * 100_000])  # deeper than json goes
def test_a_body_that_is_not_json_is_400_not_422(deepconf_url, data):
    r = requests.post(deepconf_url + PATH, data=data, timeout=60)
    assert r.status_code == 400 and r.json()["error"]["field"] == "body", r.text


@server
def test_k_above_the_vocabulary_is_400_on_generate_too(deepconf_url):
    sp = {"max_new_tokens": 2, "custom_params": {"deepconf": {"k": VOCAB + 1}}}
    r = requests.post(deepconf_url + "/generate", json={"text": "Q: 1 a+1", "sampling_params": sp},
                      timeout=60)
    assert r.status_code == 400
    assert r.json()["error"]["message"].startswith("custom_params.deepconf.k: must be <= vocab")
    sp["custom_params"]["deepconf"]["k"] = VOCAB  # the whole vocabulary is fine
    r = requests.post(deepconf_url + "/generate", json={"text": "Q: 1 a+1", "sampling_params": sp},
                      timeout=60)
    assert r.status_code == 200 and "deepconf" in r.json()["meta_info"], r.text


@server
def test_route_and_its_fields_are_in_the_openapi_schema(deepconf_url):
    schema = requests.get(deepconf_url + "/openapi.json", timeout=60).json()
    op = schema["paths"][PATH]["post"]
    body = op["requestBody"]["content"]["application/json"]["schema"]
    assert set(body["properties"]) == set(GroupRequest.model_fields)
    deepconf = next(s for s in body["properties"]["deepconf"]["anyOf"] if "properties" in s)
    fields = set(deepconf["properties"])
    assert {"method", "budget", "n_init", "tau", "k", "window", "width"} <= fields
    assert "$ref" not in json.dumps(body)  # self-contained (no #/$defs of another document)


@server
def test_info_reports_the_limits_in_force(deepconf_url):
    info = requests.get(deepconf_url + "/sglang_pr/info", timeout=60).json()["config"]["deepconf"]
    assert info["limits"] == {"max_budget": 1024, "max_width": 128}  # the test server's defaults
    assert info["limits_env"] == "SGLANG_PR_DEEPCONF_LIMITS"
    over = {"text": "Q: 1 a+1", "deepconf": {"budget": info["limits"]["max_budget"] + 1}}
    assert requests.post(deepconf_url + PATH, json=over, timeout=60).status_code == 400


@server
def test_a_seeded_group_is_reproducible(deepconf_url):
    """sampling_params.sampling_seed = s seeds branch i with s + i (SGLANG_PR_SEEDED_SAMPLING)."""
    p = heldout_set(4)[3].prompt
    cfg = {"method": "sc", "budget": 4, "width": 4}

    def texts(seed):
        sp = {"max_new_tokens": 24, "temperature": 2.0, "sampling_seed": seed}
        return [t["text"] for t in group(deepconf_url, p, cfg, sp=sp).json()["traces"]]

    first = texts(11)
    assert texts(11) == first
    assert len(set(first)) > 1  # branches got different seeds
    assert texts(12)[:3] == first[1:]  # branch i of seed 12 is branch i + 1 of seed 11


def test_group_body_unit_checks():
    deep = 0
    for _ in range(40):  # nested past MAX_DEPTH (32): whatever walks it next keeps its stack
        deep = [deep]
    prompt, cfg, req = parse_group_body({"text": "hi", "deepconf": {"method": "sc", "budget": 2},
                                         "sampling_params": None})
    assert prompt == {"text": "hi", "sampling_params": {}} and cfg.budget == 2
    assert not req.stream
    for body, field in [({"text": "x", "deepconf": {"a\udcff": 1}}, "deepconf.a\\udcff"),
                        ({"text": "x", "stream": 1}, "stream"),
                        ({"text": "x", "input_ids": [1]}, "text"),  # two prompts
                        ({"input_ids": [True]}, "input_ids.0"),  # strict: a bool is no id
                        ({"text": "x", "deepconf": None, "bogus": 0}, "bogus"),
                        ({"text": "x", "sampling_params": {"custom_params": deep}},
                         "sampling_params.custom_params" + ".0" * 31),
                        ([], "body")]:
        with pytest.raises(ConfigError) as ei:
            parse_group_body(body)
        assert ei.value.field == field and str(ei.value).startswith(field + ": "), ei.value


@pytest.mark.parametrize("message,field", [
    ("max_new_tokens must be at least 0, got -5.", "max_new_tokens"),
    ("Requested token count exceeds the model's maximum context length", "max_new_tokens"),
    ("The input (9000 tokens) is longer than the model's context length", "prompt"),
    ("logit_bias must has keys in [0, 99], got 100.", "logit_bias"),
    ("Only one of json_schema, regex, ebnf, or structural_tag can be set.", "json_schema"),
    ("invalid literal for int() with base 10: 'abc'", ""),
])
def test_sglang_errors_are_attributed_to_their_parameter(message, field):
    assert sglang_error_field(message) == field


@server
def test_bad_input_does_not_disturb_a_group_in_flight(deepconf_url):
    p = heldout_set(3)[2].prompt
    bad = [({"tau": 7}, SP), ({"k": 10**6}, SP), ({"budget": 10**9}, SP),
           ({"method": "sc", "budget": 2}, {"max_new_tokens": -5}),
           ({"method": "sc", "budget": 2}, {"max_new_tokens": 10**6}),  # refused by SGLang
           ({"method": "sc", "budget": 2}, {"top_k": 2**40})]  # would kill the scheduler
    with ThreadPoolExecutor(2) as ex:
        ok = ex.submit(group, deepconf_url, p, {"method": "sc", "budget": 4},  # ~seconds
                       sp={"max_new_tokens": 160, "ignore_eos": True})
        time.sleep(0.2)
        for cfg, sp in bad:
            assert group(deepconf_url, p, cfg, sp=sp).status_code == 400, (cfg, sp)
        assert not ok.done()  # the bad ones came while the group ran
        result = ok.result()
    assert result.status_code == 200 and result.json()["totals"]["traces_started"] == 4
    assert all(t["tokens"] == 160 for t in result.json()["traces"])  # none cut short


@server
def test_stream_reports_progress_then_the_result(deepconf_url):
    r = requests.post(deepconf_url + PATH, stream=True, timeout=300, json={
        "text": heldout_set(1)[0].prompt, "sampling_params": SP, "stream": True,
        "deepconf": {"method": "deepconf_low", "budget": 6, "n_init": 3, "window": 4}})
    events = [json.loads(line[5:]) for line in r.iter_lines(decode_unicode=True)
              if line and line.startswith("data:") and line != "data: [DONE]"]
    kinds = [e["event"] for e in events]
    assert kinds[-1] == "done" and "threshold" in kinds
    assert kinds.count("trace") == events[-1]["result"]["totals"]["traces_started"]


@server
def test_stream_reports_a_refused_group_as_an_error_event_naming_the_field(deepconf_url):
    """Over the context only shows when SGLang tokenizes a branch, after the stream began."""
    r = requests.post(deepconf_url + PATH, stream=True, timeout=120, json={
        "text": heldout_set(1)[0].prompt, "sampling_params": {"max_new_tokens": 10**6},
        "stream": True, "deepconf": {"method": "sc", "budget": 3}})
    events = [line[6:] for line in r.iter_lines(decode_unicode=True) if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    error = json.loads(events[-2])["error"]
    assert error["field"] == "sampling_params.max_new_tokens"
    assert error["message"].startswith("sampling_params.max_new_tokens: ")
    state = wait_idle_and_clean(deepconf_url, timeout_s=30)
    assert is_idle_and_clean(state), state


@server
@pytest.mark.slow
def test_kv_returns_to_idle_after_200_groups(deepconf_url):
    problems = heldout_set(50)
    sp = {"max_new_tokens": 40, "temperature": 1.0}
    # At temperature 1.0 the shipped model's branches are near-identical and end in the same
    # step, leaving nothing running to abort; at 2.0 their lengths spread (13..44 tokens seen),
    # so the first answer settles tau=0.5 while the others still run and they get aborted.
    # Each group is seeded (branch j of group i samples with seed 1000 i + j on this seeded
    # server), so which branches run long, and so the aborts asserted below, are not luck.
    spread = {"max_new_tokens": 120, "temperature": 2.0}
    configs = [  # early stops (low), consensus aborts mid-phase (tau 0.5), plain sc
        ({"method": "deepconf_low", "budget": 6, "n_init": 2, "window": 4, "width": 4}, sp),
        ({"method": "deepconf_high", "budget": 6, "n_init": 2, "window": 4, "width": 2,
          "tau": 0.5}, spread),
        ({"method": "sc", "budget": 6, "width": 6, "consensus_stop": True, "tau": 0.5}, spread),
        ({"method": "deepconf_low", "budget": 5, "n_init": 2, "window": 2, "width": 5,
          "tau": 0.6}, sp),
    ]

    def run(i):
        cfg, params = configs[i % 4]
        return i % 4, group(deepconf_url, problems[i % 50].prompt, cfg,
                            sp={**params, "sampling_seed": 1000 * i})

    with ThreadPoolExecutor(4) as ex:
        results = list(ex.map(run, range(200)))
    assert all(r.status_code == 200 for _, r in results)
    totals = {c: [r.json()["totals"] for k, r in results if k == c] for c in range(4)}
    assert sum(t["stopped_early"] for t in totals[0] + totals[3]) > 0  # the threshold did
    for c in (1, 2):  # consensus stopped running branches, in both configs built for it
        assert sum(t["consensus_reached"] for t in totals[c]) > 0, c
        assert sum(t["aborted"] for t in totals[c]) > 0, c
    state = wait_idle_and_clean(deepconf_url, timeout_s=60)
    assert is_idle_and_clean(state), state


def _wait_running(url, timeout_s=60):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if kv_state(url)["running_requests"] > 0:
            return
        time.sleep(0.1)
    pytest.fail("the group never started running")


LONG = {"max_new_tokens": 400, "temperature": 1.0, "ignore_eos": True}


@server
@pytest.mark.parametrize("stream", [True, False])
def test_client_disconnect_frees_every_branch(deepconf_url, stream):
    body = {"text": heldout_set(1)[0].prompt, "sampling_params": LONG, "stream": stream,
            "deepconf": {"method": "sc", "budget": 64, "width": 16}}
    sess = requests.Session()

    def client():
        try:
            r = sess.post(deepconf_url + PATH, json=body, stream=True, timeout=3)
            for _ in r.iter_lines():
                break  # read one event, then hang up
            r.close()
        except requests.RequestException:
            pass  # non-streaming: the read timeout is the hang-up

    t = threading.Thread(target=client)
    t.start()
    _wait_running(deepconf_url)
    t.join()
    sess.close()
    start = time.monotonic()
    # 64 x 400 tokens would take minutes; freed branches make the server idle within seconds
    state = wait_idle_and_clean(deepconf_url, timeout_s=30)
    assert is_idle_and_clean(state), state
    assert time.monotonic() - start < 30


class _RefusingManager:
    """A tokenizer manager whose every request fails with ``message`` (as SGLang's does)."""

    def __init__(self, message):
        self.message, self.aborted = message, []

    async def generate_request(self, obj, request=None):
        raise ValueError(self.message)
        yield  # an async generator, like SGLang's

    def abort_request(self, rid):
        self.aborted.append(rid)


@pytest.mark.parametrize("message,refused", [
    ("Requested token count exceeds the model's maximum context length of 8192 tokens.", True),
    ("Request is disconnected from the client side (type 1). Abort request rid='x'", False),
])
def test_backend_tells_a_refused_branch_from_a_hang_up(message, refused):
    import asyncio

    from sglang_pr.deepconf.config import TraceSettings
    from sglang_pr.deepconf.server_backend import BranchRejected, TokenizerManagerBackend

    backend = TokenizerManagerBackend(_RefusingManager(message), {
        "text": "p", "sampling_params": {"n": 1, "sampling_seed": 5}})
    assert backend.prompt["sampling_params"] == {"sampling_seed": 5}  # n is the group's
    if refused:
        with pytest.raises(BranchRejected) as ei:
            asyncio.run(backend.generate(0, TraceSettings()))
        assert ei.value.field == "max_new_tokens"
    else:  # the group is being cancelled: this branch is an abort, not a bad request
        out = asyncio.run(backend.generate(0, TraceSettings()))
        assert out["meta_info"]["finish_reason"]["type"] == "abort"
