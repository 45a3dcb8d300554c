"""Frontend language: fork + gen + vote end to end, and vote's methods on fixed meta info."""

import numpy as np
import pytest
import sglang as sgl

from sglang_pr.frontends import DeepConfRuntimeEndpoint, vote
from sglang_pr.model.task import ANSWER_PREFIX, heldout_set


@sgl.function
def fork_vote(s, prompt, branches, method):
    s += prompt
    forks = s.fork(branches)
    forks += sgl.gen("answer", max_tokens=64, temperature=0.8)
    s += vote(forks, "answer", method=method)


@pytest.mark.server
@pytest.mark.parametrize("method", ["majority", "weighted", "deepconf_low"])
def test_fork_and_vote_end_to_end(deepconf_url, method):
    backend = DeepConfRuntimeEndpoint(deepconf_url, deepconf={"window": 4})
    p = heldout_set(1)[0]
    s = fork_vote.run(prompt=p.prompt, branches=6, method=method, backend=backend)
    assert s.error() is None
    res = s["answer_vote"]
    assert len(res["answers"]) == 6 and all(c is not None for c in res["confidences"]) \
        or method == "majority"
    assert s["answer"] == (res["answer"] or "")
    assert s.text() == p.prompt + s["answer"]
    if method == "deepconf_low":  # top-10 %: confidence >= the 90th percentile (ties all kept)
        confs = res["confidences"]
        assert res["kept"] == [c >= np.percentile(confs, 90) for c in confs]
        assert sum(res["kept"]) < 6 or len(set(confs)) == 1


@pytest.mark.server
def test_confidence_methods_need_the_deepconf_backend(deepconf_url):
    with pytest.raises(ValueError, match="DeepConfRuntimeEndpoint"):
        fork_vote.run(prompt=heldout_set(1)[0].prompt, branches=2, method="weighted",
                      backend=sgl.RuntimeEndpoint(deepconf_url))


class _FakeState:
    """Stands in for a forked ProgramState: fixed text and meta info."""

    def __init__(self, text, lowest, finish="stop"):
        self.text_, self.meta = text, {
            "deepconf": {"lowest_group": lowest, "bottom10": lowest, "tail": lowest,
                         "mean": lowest, "n_tokens": 5},
            "finish_reason": {"type": finish}, "completion_tokens": 5}
        self.stream_executor = self
        self.vars = {}

    def __getitem__(self, name):
        return self.text_

    def get_meta_info(self, name):
        return self.meta

    def set_var(self, name, value):
        self.vars[name] = value


def test_vote_methods_on_fixed_meta():
    forks = [_FakeState(f"{ANSWER_PREFIX}1", 1.0) for _ in range(7)] + \
            [_FakeState(f"{ANSWER_PREFIX}2", 9.0) for _ in range(2)] + [_FakeState("", 0.5)]
    assert vote(forks, "a", "majority").answer == "1"
    assert vote(forks, "a", "weighted").answer == "2"  # 18 > 7
    low = vote(forks, "a", "deepconf_low")
    assert low.answer == "2" and low.result["kept"].count(True) == 2  # top 10 % of 10: the two 9s tie
    assert forks[0].vars["a_vote"]["answer"] == "2"
    with pytest.raises(ValueError, match="no forks"):
        vote([], "a")
