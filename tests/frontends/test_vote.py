"""Frontend language: fork + gen + vote end to end, and vote's methods on fixed meta info,
each checked against a direct computation written out here (not the code under test)."""

import warnings

import pytest
import sglang as sgl

from sglang_pr.frontends import DeepConfRuntimeEndpoint, vote
from sglang_pr.model.task import ANSWER_PREFIX, heldout_set

ETA = {"sc": None, "weighted": None, "deepconf_low": 10.0, "deepconf_high": 90.0}


def _percentile(values, q):
    """Linear-interpolation percentile, by hand: position q/100 * (n - 1) in sorted order."""
    v = sorted(values)
    pos = q / 100 * (len(v) - 1)
    lo = int(pos)
    hi = min(lo + 1, len(v) - 1)
    return v[lo] + (v[hi] - v[lo]) * (pos - lo)


def _direct(method, answers, confs, stopped):
    """(answer, kept) by the rules of the docs: stopped traces never vote; the top-eta % by
    confidence are kept; weight 1 for sc, else the confidence; ties go to the answer whose
    running total reached the top score first."""
    usable = [not s for s in stopped]
    eta = ETA[method]
    if eta is None:
        kept = usable
    else:
        s = _percentile([c for c, u in zip(confs, usable) if u], 100 - eta)
        kept = [u and c >= s for c, u in zip(confs, usable)]
    totals, reached = {}, {}
    for i, (a, c, k) in enumerate(zip(answers, confs, kept)):
        if a is None or not k:
            continue
        totals[a] = totals.get(a, 0.0) + (1.0 if method == "sc" else c)
        reached[a] = i  # positive weights: an answer reaches its final total at its last vote
    if not totals:
        return None, kept
    top = max(totals.values())
    return min((a for a in totals if totals[a] == top), key=reached.get), kept


@sgl.function
def fork_vote(s, prompt, branches, method):
    s += prompt
    forks = s.fork(branches)
    forks += sgl.gen("answer", max_tokens=64, temperature=0.8)
    s += vote(forks, "answer", method=method)


@pytest.mark.server
@pytest.mark.parametrize("method", ["sc", "weighted", "deepconf_low"])
def test_fork_and_vote_end_to_end(deepconf_url, method):
    backend = DeepConfRuntimeEndpoint(deepconf_url, deepconf={"window": 4})
    p = heldout_set(1)[0]
    s = fork_vote.run(prompt=p.prompt, branches=6, method=method, backend=backend)
    assert s.error() is None
    res = s["answer_vote"]
    answers, confs = res["answers"], res["confidences"]
    assert res["method"] == method and len(answers) == 6 == len(confs)
    # sc needs no confidences (none computed); the others have one per trace
    assert all((c is None) == (method == "sc") for c in confs), confs
    want, kept = _direct(method, answers, confs if method != "sc" else [0.0] * 6, [False] * 6)
    assert res["kept"] == kept and res["answer"] == want
    if method == "deepconf_low":  # 6 traces, top 10 %: the 90th percentile is above the 5th
        assert kept == [c == max(confs) for c in confs]  # value, so only the maximum survives
    assert s["answer"] == (res["answer"] or "")
    assert s.text() == p.prompt + s["answer"]


@pytest.mark.server
def test_confidence_methods_need_the_deepconf_backend(deepconf_url):
    with pytest.raises(ValueError, match="DeepConfRuntimeEndpoint"):
        fork_vote.run(prompt=heldout_set(1)[0].prompt, branches=2, method="weighted",
                      backend=sgl.RuntimeEndpoint(deepconf_url))


class _FakeState:
    """Stands in for a forked ProgramState: fixed text and meta info."""

    def __init__(self, answer, lowest, finish="stop"):
        self.text_ = "" if answer is None else f"a:1+1=2\n{ANSWER_PREFIX}{answer}"
        self.meta = {
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


# Hand-made: (answer, lowest-group confidence, stopped early). Plain counts 1 x5, 2 x3, 3 x2;
# confidence mass 1: 5, 2: 3 * 2.5 = 7.5, 3: 2 * 4 = 8; the 9.5 trace stopped early.
EXAMPLE = [("1", 1.0, False)] * 5 + [("2", 2.5, False)] * 3 + [("3", 4.0, False)] * 2 + \
          [(None, 0.5, False), ("4", 9.5, True)]
EXPECTED = {"sc": "1", "weighted": "3", "deepconf_low": "3", "deepconf_high": "3"}


def _forks(example):
    return [_FakeState(a, c, "low_confidence" if st else "stop") for a, c, st in example]


@pytest.mark.parametrize("method", list(EXPECTED))
def test_vote_methods_on_fixed_meta(method):
    answers, confs, stopped = zip(*EXAMPLE)
    want, kept = _direct(method, answers, confs, stopped)
    assert want == EXPECTED[method]  # the direct rules agree with the hand count above
    forks = _forks(EXAMPLE)
    res = vote(forks, "a", method)
    assert res.answer == want and res.result["kept"] == kept
    assert res.result["answers"] == list(answers)
    assert forks[0].vars["a_vote"]["answer"] == want


def test_deepconf_low_keeps_the_top_ten_percent_by_hand():
    # 11 usable traces: the 90th percentile sits at position 9 of the sorted confidences (4.0),
    # so the two 4.0 traces are kept and the early-stopped 9.5 one never votes.
    res = vote(_forks(EXAMPLE), "a", "deepconf_low")
    assert [i for i, k in enumerate(res.result["kept"]) if k] == [8, 9]
    assert res.result["vote"]["scores"] == {"3": 8.0}
    with_stopped = vote(_forks(EXAMPLE), "a", "deepconf_low", include_stopped=True)
    assert with_stopped.answer == "4"


def test_sc_tie_goes_to_the_answer_that_reached_the_top_count_first():
    forks = _forks([("9", 1.0, False), ("8", 1.0, False), ("8", 1.0, False), ("9", 1.0, False)])
    res = vote(forks, "a", "sc")
    assert res.answer == "8" and res.result["vote"]["scores"] == {"9": 2.0, "8": 2.0}


def test_majority_is_a_deprecated_alias_of_sc():
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the default and the one name warn about nothing
        new = vote(_forks(EXAMPLE), "a")
    with pytest.deprecated_call(match="'sc'"):
        old = vote(_forks(EXAMPLE), "a", "majority")
    assert old.answer == new.answer == EXPECTED["sc"]
    assert old.result == new.result and old.result["method"] == "sc"


def test_vote_needs_forks():
    with pytest.raises(ValueError, match="no forks"):
        vote([], "a")
