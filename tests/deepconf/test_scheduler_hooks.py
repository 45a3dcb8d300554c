"""Runtime: confidence in the scheduler, the low_confidence finish, -inf == plain sampling."""

import pytest
import requests

from sglang_pr.deepconf.summary import summarize
from sglang_pr.model.task import heldout_set
from sglang_pr.server.kv_accounting import is_idle_and_clean, wait_idle_and_clean

pytestmark = pytest.mark.server


def generate(url, prompt, sp, timeout=120):
    r = requests.post(url + "/generate", json={"text": prompt, "sampling_params": sp},
                      timeout=timeout)
    return r


def test_threshold_minus_inf_is_plain_sampling(deepconf_url):
    prompts = [p.prompt for p in heldout_set(6)]
    base = {"max_new_tokens": 48, "temperature": 1.0, "top_p": 0.95}
    for p in prompts:  # same cached prefix for both runs below
        assert generate(deepconf_url, p, {"max_new_tokens": 0}).status_code == 200
    for seed, p in enumerate(prompts):
        sp = {**base, "sampling_seed": 1000 + seed}
        plain = generate(deepconf_url, p, sp).json()
        tracked = generate(deepconf_url, p, {**sp, "custom_params": {
            "deepconf": {"window": 4, "threshold": "-inf"}}}).json()
        assert tracked["text"] == plain["text"]
        assert tracked["meta_info"]["finish_reason"]["type"] != "low_confidence"
        confs = tracked["meta_info"]["deepconf_confidences"]
        assert len(confs) == tracked["meta_info"]["completion_tokens"]
        assert "deepconf_confidences" not in plain["meta_info"]
        assert tracked["meta_info"]["deepconf"] == pytest.approx(summarize(confs, 4).to_dict())


def test_forced_early_stop_carries_the_finish_reason(deepconf_url):
    p = heldout_set(1)[0].prompt
    out = generate(deepconf_url, p, {"max_new_tokens": 64, "temperature": 1.0, "custom_params": {
        "deepconf": {"window": 5, "k": 10, "threshold": 1e9}}}).json()
    fin = out["meta_info"]["finish_reason"]
    assert fin["type"] == "low_confidence" and fin["threshold"] == 1e9 and fin["window"] == 5
    # decided the step the first window filled: no decode step after it
    assert out["meta_info"]["completion_tokens"] == 5 == fin["tokens"]
    confs = out["meta_info"]["deepconf_confidences"]
    assert fin["confidence"] == pytest.approx(sum(confs) / 5)
    # its KV went back with the finish (SGLang's own accounting: nothing held, no leak)
    state = wait_idle_and_clean(deepconf_url, timeout_s=30)
    assert is_idle_and_clean(state), state


def _mid_trace_threshold(confs, w):
    """A threshold the trace's window mean first crosses strictly after its first window."""
    groups = [sum(confs[i - w:i]) / w for i in range(w, len(confs) + 1)]
    if len(groups) < 3 or min(groups[1:]) >= groups[0]:
        return None, None
    thr = (min(groups[1:]) + groups[0]) / 2
    return thr, next(i for i, g in enumerate(groups) if g < thr) + w


def test_threshold_between_stops_where_the_window_first_dips(deepconf_url):
    sp = {"max_new_tokens": 48, "temperature": 1.0, "sampling_seed": 7}
    for p in (q.prompt for q in heldout_set(8)):
        generate(deepconf_url, p, {"max_new_tokens": 0})  # both runs below hit the cache
        free = generate(deepconf_url, p, {**sp, "custom_params": {"deepconf": {"window": 3}}})
        thr, stop_at = _mid_trace_threshold(free.json()["meta_info"]["deepconf_confidences"], 3)
        if thr is not None:
            break
    else:
        pytest.fail("no held-out prompt gave a trace whose confidence dips mid-way")
    out = generate(deepconf_url, p, {**sp, "custom_params": {
        "deepconf": {"window": 3, "threshold": thr}}}).json()
    assert out["meta_info"]["finish_reason"]["type"] == "low_confidence"
    assert out["meta_info"]["completion_tokens"] == stop_at
    assert out["output_ids"] == free.json()["output_ids"][:stop_at]


@pytest.mark.parametrize("deepconf,field", [
    ({"window": 0}, "custom_params.deepconf.window"),
    ({"k": -1}, "custom_params.deepconf.k"),
    ({"bogus": 1}, "custom_params.deepconf.bogus"),
    ("yes", "custom_params.deepconf"),
])
def test_bad_settings_are_400_naming_the_field(deepconf_url, deepconf, field):
    prompt = heldout_set(1)[0].prompt
    r = generate(deepconf_url, prompt, {"max_new_tokens": 4,
                                                 "custom_params": {"deepconf": deepconf}})
    assert r.status_code == 400
    assert field in r.text
    # the server is unharmed
    assert generate(deepconf_url, prompt, {"max_new_tokens": 2}).status_code == 200
