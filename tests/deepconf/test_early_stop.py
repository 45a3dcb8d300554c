"""The scheduler-side early stop (deepconf/early_stop.py): the window tracker, per-request
state and the stash API, the sampling observer, and the runtime on a served model."""

import math

import numpy as np
import pytest
import requests
import torch

from sglang_pr.deepconf import early_stop as runtime_state
from sglang_pr.deepconf.confidence import token_confidence
from sglang_pr.deepconf.config import META_CONFIDENCES
from sglang_pr.deepconf.early_stop import (
    PLAN_ATTR,
    ConfidenceHostOutput,
    ConfidenceTracker,
    DeepConfObserver,
    FinishLowConfidence,
    RowPlan,
    _after_update_finish_state,
    find_host_output,
    push_token_confidences,
    state_of,
)
from sglang_pr.deepconf.summary import group_confidences, summarize
from sglang_pr.model.task import heldout_set
from sglang_pr.server.kv_accounting import is_idle_and_clean, wait_idle_and_clean


def test_docstring_example():
    t = ConfidenceTracker(window=3, threshold=1.0)
    assert t.update([2.0]) is None and t.current_group == 2.0 and not t.window_full
    assert t.update([2.0]) is None and t.lowest_group == math.inf  # window not full yet
    assert t.update([0.5]) is None and t.lowest_group == pytest.approx(1.5)
    assert t.update([0.2]) == 0
    assert t.stopped and t.stop_confidence == pytest.approx(0.9)


def test_partial_window_never_stops_even_below_threshold():
    t = ConfidenceTracker(window=5, threshold=10.0)
    assert t.update([0.1, 0.1, 0.1, 0.1]) is None
    assert not t.stopped
    assert t.update([0.1]) == 0  # the 5th token fills the window


def test_multi_token_update_reports_the_stop_index():
    t = ConfidenceTracker(window=2, threshold=1.0)
    # groups: (3,3)=3, (3,0.5)=1.75, (0.5,0.2)=0.35 -> stop at the 4th token (index 3)
    assert t.update(torch.tensor([3.0, 3.0, 0.5, 0.2, 5.0])) == 3
    assert t.n_tokens == 4  # the token after the stop is not consumed


def test_lowest_group_matches_offline_groups():
    rng = np.random.default_rng(1)
    confs = rng.uniform(0.5, 3.0, size=200)
    t = ConfidenceTracker(window=16)
    for i in range(0, 200, 7):  # uneven chunks, like speculative acceptance
        assert t.update(confs[i:i + 7].tolist()) is None
    assert t.lowest_group == pytest.approx(group_confidences(confs, 16).min(), rel=1e-12)
    assert t.current_group == pytest.approx(confs[-16:].mean(), rel=1e-12)


@pytest.mark.parametrize("thr", [None, -math.inf])
def test_no_threshold_never_stops(thr):
    t = ConfidenceTracker(window=1, threshold=thr)
    assert t.update([0.0] * 50) is None and not t.stopped


def test_bad_window():
    with pytest.raises(ValueError, match="window"):
        ConfidenceTracker(window=0)


class Params:
    def __init__(self, custom):
        self.custom_params = custom


class Req:
    def __init__(self, custom):
        self.sampling_params = Params(custom)
        self.output_ids, self.customized_info = [], None
        self.finished_reason, self.finished_len = None, None

    def finished(self):
        return self.finished_reason is not None

    def commit(self, tokens, confs):
        """What a (speculative) decode step does: stash, append, update_finish_state."""
        push_token_confidences(self, confs)
        self.output_ids.extend(tokens)
        _after_update_finish_state(None, self, len(tokens))


def test_not_opted_in():
    for custom in (None, {}, {"other": 1}, {"deepconf": None}, {"deepconf": False}):
        assert state_of(Req(custom)) is None


def test_invalid_settings_are_ignored_in_the_scheduler(caplog):
    assert state_of(Req({"deepconf": {"window": 0}})) is None


def test_multi_token_commit_cuts_after_the_stop_token():
    req = Req({"deepconf": {"window": 2, "threshold": 1.0}})
    req.commit([5], [3.0])
    req.commit([6, 7, 8, 9], torch.tensor([3.0, 0.5, 0.1, 4.0]))  # windows 3, 1.75, 0.3 -> stop
    fin = req.finished_reason
    assert isinstance(fin, FinishLowConfidence)
    assert fin.to_json()["type"] == "low_confidence" and fin.tokens == 4
    assert req.finished_len == 4  # tokens 8 and 9 are cut
    assert fin.confidence == pytest.approx(0.3)
    assert req.customized_info[META_CONFIDENCES] == pytest.approx([3.0, 3.0, 0.5, 0.1, 4.0])


def test_natural_finish_wins_and_confidences_stay_aligned():
    req = Req({"deepconf": {"window": 1, "threshold": 10.0}})
    push_token_confidences(req, [0.1])
    req.output_ids.append(2)
    req.finished_reason = "eos"  # e.g. FINISH_MATCHED_TOKEN set by SGLang in the same step
    _after_update_finish_state(None, req, 1)
    assert req.finished_reason == "eos"
    assert req.customized_info[META_CONFIDENCES] == [0.1]


def test_missing_or_stale_confidences_are_not_applied():
    req = Req({"deepconf": {"window": 1, "threshold": 10.0}})
    req.output_ids.append(1)
    _after_update_finish_state(None, req, 1)  # nothing stashed
    assert not req.finished()
    push_token_confidences(req, [0.1])  # stashed for position 1 ...
    req.output_ids.extend([2, 3])  # ... but two tokens arrived from elsewhere
    _after_update_finish_state(None, req, 1)
    assert not req.finished()
    state = runtime_state.state_of(req)
    assert state.tracker.n_tokens == 0


class Info:
    pass


def _plan(row_ids, ks, n_rows):
    return RowPlan.build([f"req{i}" for i in row_ids], row_ids, ks, n_rows, "cpu")


@pytest.mark.parametrize("row_ids,ks", [([0, 1, 2, 3], [20] * 4), ([1, 3], [5, 5]),
                                        ([0, 2, 3], [3, 20, 7])])
def test_confidences_for_planned_rows_only(row_ids, ks):
    logits = torch.randn(4, 50)
    before = logits.clone()
    info = Info()
    setattr(info, PLAN_ATTR, _plan(row_ids, ks, 4))
    obs = DeepConfObserver()
    assert obs.is_active(info)
    state = obs.before_grammar(logits, info)
    host = obs.after_sample(state, torch.zeros(4)).copy_to_host(lambda t: t.clone())
    got = dict(host.per_request())
    for r, k in zip(row_ids, ks):
        assert got[f"req{r}"] == pytest.approx(token_confidence(logits[r], k).item(), rel=1e-5)
    assert torch.equal(logits, before)  # sampling sees exactly what it would have seen


def test_inactive_without_plan():
    info = Info()
    assert not DeepConfObserver().is_active(info)
    setattr(info, PLAN_ATTR, None)
    assert not DeepConfObserver().is_active(info)


def test_find_host_output_in_composites():
    host = ConfidenceHostOutput(("a",), torch.tensor([1.0]))

    class Composite:
        outputs = (object(), host)

    assert find_host_output(host) is host
    assert find_host_output(Composite()) is host
    assert find_host_output(None) is None and find_host_output(object()) is None


@pytest.mark.gpu
def test_gpu_matches_cpu():
    logits = torch.randn(8, 1000)
    info_c, info_g = Info(), Info()
    setattr(info_c, PLAN_ATTR, RowPlan.build(list(range(8)), list(range(8)), [20] * 8, 8, "cpu"))
    setattr(info_g, PLAN_ATTR, RowPlan.build(list(range(8)), list(range(8)), [20] * 8, 8, "cuda"))
    obs = DeepConfObserver()
    c = obs.before_grammar(logits, info_c)[1]
    g = obs.before_grammar(logits.cuda(), info_g)[1].cpu()
    torch.testing.assert_close(c, g, rtol=1e-4, atol=1e-4)


def test_plan_for_another_batch_size_tracks_nothing():
    info = Info()
    setattr(info, PLAN_ATTR, _plan([0, 1, 2, 3], [20] * 4, 4))
    assert DeepConfObserver().before_grammar(torch.randn(3, 50), info) is None


# ---- on a served model ----
def generate(url, prompt, sp, timeout=120):
    r = requests.post(url + "/generate", json={"text": prompt, "sampling_params": sp},
                      timeout=timeout)
    return r


@pytest.mark.server
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


@pytest.mark.server
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


@pytest.mark.server
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
@pytest.mark.server
def test_bad_settings_are_400_naming_the_field(deepconf_url, deepconf, field):
    prompt = heldout_set(1)[0].prompt
    r = generate(deepconf_url, prompt, {"max_new_tokens": 4,
                                                 "custom_params": {"deepconf": deepconf}})
    assert r.status_code == 400
    assert field in r.text
    # the server is unharmed
    assert generate(deepconf_url, prompt, {"max_new_tokens": 2}).status_code == 200
