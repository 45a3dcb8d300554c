"""Per-request state, the stash API speculative decoders use, and the finish hook (no server)."""

import pytest
import torch

from sglang_pr.deepconf import runtime_state
from sglang_pr.deepconf.runtime_state import META_CONFIDENCES, push_token_confidences, state_of
from sglang_pr.deepconf.scheduler_hooks import FinishLowConfidence, _after_update_finish_state


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
