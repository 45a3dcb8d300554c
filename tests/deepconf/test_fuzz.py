"""Fuzzing every DeepConf route with generated bodies (hypothesis, derandomized: same examples
every run). Properties: never a 5xx; every 4xx names a field; a 200 stays within what was asked
(so the run stays cheap); afterwards the server is healthy and its KV idle and clean.

Bodies are structurally valid-but-wrong or garbage: wrong types, huge/negative/NaN numbers, bad
regexes, lone surrogates, unknown keys, lists for objects, empty strings. Every body that could
pass asks for little (budget <= 4, max_new_tokens <= 8): no generated value can select a large
run (a count is small, or refused: <= 0, over a cap, not an integer), and the defaults that
would be large (budget 256, max_new_tokens 128 or unbounded) are never left to apply.
"""

from __future__ import annotations

import json
import math

import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sglang_pr.model.task import heldout_set
from sglang_pr.server.kv_accounting import is_idle_and_clean, wait_idle_and_clean

pytestmark = pytest.mark.server
GROUP = "/sglang_pr/deepconf/group"
PROMPT = heldout_set(1)[0].prompt
MAX_BUDGET, MAX_NEW = 4, 8
FUZZ = settings(derandomize=True, database=None, deadline=None, print_blob=True,
                suppress_health_check=list(HealthCheck))
SURROGATES = ["\udcff", "\ud800", "a\udfffb", PROMPT + "\udcff"]
BAD_REGEX = ["(", "[", "*", "a{2,1}", "(?P<", "\\", "(?<=a+)b"]
GROUP_FIELDS = {"text", "input_ids", "sampling_params", "deepconf", "stream",
                "return_confidences", "body"}


# --- strategies -------------------------------------------------------------------------
def _not_integral(x: float) -> bool:  # 2.0 would pass as the count 2 (and 500.0 as 500)
    return not math.isfinite(x) or not x.is_integer()


def wrong_type():
    """Anything but a number that could pass as a count (None, strings, lists, objects...)."""
    return st.one_of(
        st.none(), st.text(max_size=6), st.sampled_from(SURROGATES + [""]),
        st.floats(allow_nan=True, allow_infinity=True).filter(_not_integral),
        st.lists(st.integers(-3, 3), max_size=2),
        st.dictionaries(st.sampled_from(["a", "\udcff", ""]), st.integers(), max_size=2))


DEEP: list = [0]
for _ in range(40):  # nested deeper than a group body may be
    DEEP = [DEEP]


def anything():
    return st.one_of(wrong_type(), st.booleans(), st.integers(-10**30, 10**30), st.just(DEEP))


def non_object():
    """Garbage where an object belongs (never None or a dict: those would mean the defaults)."""
    return anything().filter(lambda x: x is not None and not isinstance(x, dict))


def bad_count(refused_from: int = 10**5):
    """A count that must be refused: <= 0, over every cap, or not an integer."""
    return st.one_of(st.integers(-10**12, 0), st.integers(refused_from, 10**30), wrong_type())


def bad_float():
    return st.one_of(st.sampled_from([math.nan, math.inf, -math.inf, -1.0, 0.0, 1e300]),
                     wrong_type())


class Shape:
    """An object's fields as strategies: ``valid`` ones (optional fields present or not), and
    ``wrong`` ones (a key only there is an unknown field). :meth:`ok` draws objects with every
    field valid, :meth:`wrong_at` with that one field wrong: one mistake at a time, so the
    checks behind the first one get reached too, and every field's mistakes get tried (a
    random choice of the field would leave some untried: hypothesis favours early choices)."""

    def __init__(self, valid: dict, wrong: dict, required: frozenset = frozenset()):
        self.valid, self.wrong, self.required = valid, wrong, required

    def ok(self, **override):
        return self._build([None], override)

    def wrong_at(self, key: str, **override):
        return self._build([key], override)

    def _build(self, choices: list, override: dict):
        valid = {**self.valid, **override}

        @st.composite
        def build(draw):
            bad = draw(st.sampled_from(choices))
            out = {}
            for key in [*valid, *([bad] if bad is not None and bad not in valid else [])]:
                if key == bad:
                    out[key] = draw(self.wrong[key])
                elif key in self.required or key in override or draw(st.booleans()):
                    out[key] = draw(valid[key])
            return out

        return build()


CONFIG = Shape(
    # budget and n_init always given: by default 256 traces, and 16 (more than any budget here)
    {"budget": st.integers(MAX_BUDGET - 1, MAX_BUDGET), "n_init": st.integers(1, MAX_BUDGET - 1),
     "method": st.sampled_from(["sc", "deepconf_low", "deepconf_high"]),
     "width": st.integers(1, MAX_BUDGET),
     "k": st.integers(1, 100), "window": st.integers(1, 8), "tau": st.floats(0.01, 1.0),
     "extractor": st.sampled_from(["task", "last_number", "boxed"]),
     "answer_regex": st.sampled_from([r"#### (\d+)", r"\d+"]),
     "consensus_stop": st.booleans(), "weighted": st.booleans(),
     "vote_confidence": st.sampled_from(["lowest_group", "bottom10", "tail", "mean"]),
     "warmup_votes": st.sampled_from(["kept", "all"])},
    {"budget": bad_count(), "method": st.sampled_from(["deepconf", "", "SC", "\udcff"]) |
     wrong_type(), "n_init": bad_count(), "width": bad_count(),
     "k": bad_count(refused_from=101), "window": bad_count(), "tau": bad_float(),
     "eta": bad_float() | st.sampled_from([50.0, 90.0]),
     "extractor": st.sampled_from(["regex", "nope", ""]) | wrong_type(),
     "answer_regex": st.sampled_from(BAD_REGEX) | wrong_type(),
     "consensus_stop": wrong_type(), "vote_confidence": anything(),
     "bogus": anything(), "\udcff": anything()},
    required=frozenset({"budget", "n_init"}))

SAMPLING = Shape(
    {"max_new_tokens": st.integers(0, MAX_NEW),  # required: the default is 128
     "temperature": st.floats(0.0, 2.0), "top_p": st.floats(0.05, 1.0),
     "top_k": st.sampled_from([-1, 1, 5, 100, 2**30]), "sampling_seed": st.integers(0, 2**62),
     "stop": st.sampled_from(["#", ["\n"]])},
    {"max_new_tokens": st.integers(-10**9, -1) | st.integers(10**6, 10**30) |
     wrong_type().filter(lambda x: x is not None),  # null would mean unbounded
     "temperature": bad_float(), "top_p": bad_float(),
     "top_k": st.sampled_from([0, -2, 2**31, 2**40, "5"]),  # 2**31: SGLang's int32 overflows
     "n": st.sampled_from([0, -1, 2]) | wrong_type(),
     "sampling_seed": st.sampled_from([2**64, -2**64]) | wrong_type(),
     "min_new_tokens": st.sampled_from([-1, MAX_NEW + 1]),
     "custom_params": non_object(), "bogus": anything()},
    required=frozenset({"max_new_tokens"}))

ENVELOPE = Shape(
    {"text": st.sampled_from([PROMPT, heldout_set(2)[1].prompt, "", " "]) | st.text(max_size=12),
     "sampling_params": SAMPLING.ok(), "deepconf": CONFIG.ok(),
     "stream": st.booleans(), "return_confidences": st.booleans()},
    {"text": st.sampled_from(SURROGATES) | wrong_type(),
     "input_ids": st.lists(st.integers(-5, 200), max_size=4) | wrong_type(),
     "sampling_params": non_object(), "deepconf": non_object(),
     "stream": wrong_type(), "return_confidences": wrong_type(), "nope": anything()},
    required=frozenset({"text", "sampling_params", "deepconf"}))

TRACE = Shape(
    {"k": st.integers(1, 100), "window": st.integers(1, 8),
     "threshold": st.floats(-1e300, 1e300) | st.none()},
    {"k": bad_count(refused_from=101), "window": bad_count(),
     "threshold": st.sampled_from([math.nan, math.inf, "high", [1.0]]), "bogus": anything()})


def generate_body(deepconf):
    """A /generate body whose ``custom_params.deepconf`` is drawn from ``deepconf``."""
    return st.fixed_dictionaries({
        "text": st.sampled_from([PROMPT] * 9 + SURROGATES[:1]),
        "sampling_params": st.fixed_dictionaries({
            "max_new_tokens": st.integers(1, MAX_NEW),
            "custom_params": st.fixed_dictionaries({"deepconf": deepconf})})})


CHAT = Shape(
    {"model": st.just("default"), "messages": st.just([{"role": "user", "content": PROMPT}]),
     "max_tokens": st.integers(1, MAX_NEW), "deepconf": CONFIG.ok(),
     "temperature": st.floats(0.0, 2.0)},
    {"messages": st.sampled_from([[], [{"role": "user", "content": "\udcff"}]]),
     "max_tokens": st.integers(-3, 0) | st.integers(10**6, 10**9),
     "deepconf": non_object(), "n": st.sampled_from([0, -1, 2]), "stream": st.just(True),
     "temperature": st.sampled_from([-1.0, "hot"]), "top_k": st.sampled_from([0, 2**40])},
    required=frozenset({"model", "messages", "max_tokens", "deepconf"}))


def cases(shape: Shape, valid_n: int, wrong_n: int, **nested: Shape):
    """(name, strategy, examples): all valid, then each field of ``shape`` wrong, then each
    field of each ``nested`` shape (a field of ``shape``) wrong with the rest valid."""
    yield "valid", shape.ok(), valid_n
    for key in shape.wrong:
        yield key, shape.wrong_at(key), wrong_n
    for field, inner in nested.items():
        for key in inner.wrong:
            yield f"{field}.{key}", shape.ok(**{field: inner.wrong_at(key)}), wrong_n


# --- checks ---------------------------------------------------------------------------------
def post(session, url: str, body) -> requests.Response:
    data = json.dumps(body, allow_nan=True)  # NaN/Infinity on purpose; surrogates as \\uXXXX
    return session.post(url, data=data, headers={"Content-Type": "application/json"},
                        timeout=120)


def check_group_response(r: requests.Response, body: dict) -> None:
    assert r.status_code in (200, 400), (r.status_code, r.text[:500], body)
    if r.status_code == 400:
        err = r.json()["error"]
        field = err["field"]
        assert field and err["message"].startswith(field + ":"), (err, body)
        named = GROUP_FIELDS | {str(k).encode("utf-8", "backslashreplace").decode() for k in body}
        assert field.split(".")[0] in named, (err, body)
        return
    if body.get("stream") is True:
        events = [line[6:] for line in r.text.splitlines() if line.startswith("data: ")]
        assert events[-1] == "[DONE]" and json.loads(events[-2])["event"] in ("done", "error")
        return
    d = r.json()
    assert d["totals"]["traces_started"] <= MAX_BUDGET, body
    assert all(t["tokens"] <= MAX_NEW for t in d["traces"]), body


def error_message(r: requests.Response) -> tuple[str, str | None]:
    """(message, param) of an SGLang 400: ``{"error": {"message"}}``, ``{"error": "..."}`` or
    the OpenAI shape ``{"message", "param"}``."""
    d = r.json()
    err = d.get("error", d)
    return (err, None) if isinstance(err, str) else (err["message"], err.get("param"))


def server_is_fine(url: str) -> None:
    assert requests.get(url + "/health", timeout=30).status_code == 200
    state = wait_idle_and_clean(url, timeout_s=60)
    assert is_idle_and_clean(state), state


# --- the fuzzers ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def session():
    with requests.Session() as s:
        yield s


def fuzz(name: str, strategy, max_examples: int, check) -> None:
    @settings(FUZZ, max_examples=max_examples)
    @given(body=strategy)
    def run(body):
        check(body)

    try:
        run()
    except BaseException as e:
        e.add_note(f"fuzz case: {name}")
        raise


def test_group_route_fuzz(deepconf_url, session):
    def check(body):
        check_group_response(post(session, deepconf_url + GROUP, body), body)

    for name, strategy, n in cases(ENVELOPE, 150, 16, sampling_params=SAMPLING,
                                   deepconf=CONFIG):
        fuzz(name, strategy, n, check)
    server_is_fine(deepconf_url)


def test_generate_custom_params_fuzz(deepconf_url, session):
    def check(body):
        r = post(session, deepconf_url + "/generate", body)
        assert r.status_code in (200, 400), (r.status_code, r.text[:500], body)
        raw = body["sampling_params"]["custom_params"]["deepconf"]
        if r.status_code == 400:
            msg, _ = error_message(r)
            # ours name the setting; SGLang's JSON parser (NaN, surrogates) names the body
            assert "custom_params.deepconf" in msg or "'body'" in msg, (msg, body)
        elif raw is not None and raw is not False:  # tracked: the trace has its summary
            assert "deepconf" in r.json()["meta_info"], body

    for name, strategy, n in cases(TRACE, 60, 16):
        fuzz(name, generate_body(strategy), n, check)
    fuzz("not an object", generate_body(st.booleans() | non_object()), 40, check)
    server_is_fine(deepconf_url)


def test_chat_completions_deepconf_fuzz(deepconf_url, session):
    def check(body):
        r = post(session, deepconf_url + "/v1/chat/completions", body)
        assert r.status_code in (200, 400), (r.status_code, r.text[:500], body)
        if r.status_code == 400:
            msg, param = error_message(r)
            if param:  # ours: "deepconf.tau: ..." with param "deepconf.tau"
                assert msg.startswith(param + ":"), (msg, param, body)
            else:  # SGLang's own (its request model, JSON parser): the field in the text
                assert any(f"'{k}'" in msg for k in [*body, "body"]), (msg, body)
            return
        meta = r.json()["metadata"]["deepconf"]
        assert meta["totals"]["traces_started"] <= MAX_BUDGET, body

    for name, strategy, n in cases(CHAT, 60, 12, deepconf=CONFIG):
        fuzz(name, strategy, n, check)
    server_is_fine(deepconf_url)
