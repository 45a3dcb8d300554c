"""Fork-group orchestration against a scripted fake backend (no server)."""

import asyncio

import numpy as np
import pytest

from sglang_pr.deepconf.config import DeepConfConfig
from sglang_pr.deepconf.group import GroupRun
from sglang_pr.deepconf.server_backend import BranchRejected
from sglang_pr.model.task import ANSWER_PREFIX


class FakeBackend:
    """Trace i answers answers[i] with constant confidence confs[i] over n tokens.

    A trace run with a threshold above its confidence stops early after ``window`` tokens
    (what the scheduler does); aborted traces report the tokens made so far.
    """

    def __init__(self, answers, confs, n_tokens=20, window=4, delay=0.001):
        self.answers, self.confs, self.n, self.w, self.delay = answers, confs, n_tokens, window, delay
        self.started, self.aborted, self.prefilled = [], set(), 0
        self.events = {}

    async def prefill(self):
        self.prefilled += 1
        return {"prompt_tokens": 7}

    async def generate(self, index, settings):
        self.started.append((index, settings.threshold))
        ev = self.events[index] = asyncio.Event()
        c = self.confs[index]
        stop = settings.threshold is not None and c < settings.threshold
        tokens = self.w if stop else self.n
        try:
            await asyncio.wait_for(ev.wait(), timeout=self.delay * (1 + index % 3))
            finish = {"type": "abort"}
            tokens = 2
        except asyncio.TimeoutError:
            finish = {"type": "low_confidence"} if stop else {"type": "stop"}
        text = "" if stop else f"work\n{ANSWER_PREFIX}{self.answers[index]}"
        return {"text": text, "meta_info": {"finish_reason": finish, "completion_tokens": tokens,
                                            "cached_tokens": 7,
                                            "deepconf_confidences": [c] * tokens}}

    def abort(self, index):
        self.aborted.add(index)
        self.events[index].set()


def run(cfg, backend):
    return asyncio.run(GroupRun(cfg, backend).run())


def test_sc_runs_the_whole_budget_with_plain_majority():
    answers = [1, 1, 2, 2, 2, 3] * 2
    confs = [5.0] * 12
    b = FakeBackend(answers, confs)
    r = run(DeepConfConfig(method="sc", budget=12, width=4, window=4), b)
    assert r.totals["traces_started"] == 12 and not r.totals["consensus_reached"]
    assert r.answer == "2" and r.vote["scores"] == {"1": 4.0, "2": 6.0, "3": 2.0}
    assert all(thr is None for _, thr in b.started) and b.prefilled == 1
    assert r.totals["generated_tokens"] == 12 * 20


def test_deepconf_low_threshold_is_the_90th_percentile_of_warmup_lowest():
    rng = np.random.default_rng(0)
    confs = rng.uniform(1, 5, size=40).tolist()
    answers = [i % 2 for i in range(40)]
    b = FakeBackend(answers, confs)
    cfg = DeepConfConfig(method="deepconf_low", budget=40, n_init=16, window=4, width=8,
                         consensus_stop=False, min_voters=None)  # the bare η rule, no floor
    r = run(cfg, b)
    assert r.threshold == pytest.approx(np.percentile(confs[:16], 90))
    # warm-up traces run without a threshold, the rest with it
    assert all(thr is None for i, thr in b.started if i < 16)
    assert all(thr == pytest.approx(r.threshold) for i, thr in b.started if i >= 16)
    stopped = [t for t in r.traces if t.finish_type == "low_confidence"]
    assert {t.index for t in stopped} == {i for i in range(16, 40) if confs[i] < r.threshold}
    assert all(not t.voted for t in stopped)
    voters = {t.index for t in r.traces if t.voted}
    assert voters == {i for i in range(40) if confs[i] >= r.threshold}


def test_warmup_votes_all_lets_every_warmup_trace_vote():
    # low-confidence warm-up traces say 1, the two most confident say 2
    answers, confs = [1] * 14 + [2] * 2, [2.0] * 14 + [5.0] * 2
    bare = dict(method="deepconf_low", budget=16, n_init=16, window=4, width=16,
                min_voters=None, weighted=True)  # η 10, no voter floor, the paper's vote
    kept = run(DeepConfConfig(**bare), FakeBackend(answers, confs))
    assert kept.answer == "2" and kept.totals["voters"] == 2  # top-10 %: only the 2s vote
    every = run(DeepConfConfig(**bare, warmup_votes="all"), FakeBackend(answers, confs))
    assert every.answer == "1" and every.totals["voters"] == 16  # 28 > 10, weighted
    assert every.vote["scores"] == {"1": 28.0, "2": 10.0}


def test_voter_floor_lowers_the_threshold_until_m_warmup_traces_vote():
    # 16 warm-up traces with distinct confidences; η 10 alone keeps the top 2
    confs = [1.0 + 0.25 * i for i in range(16)]
    answers = [i % 3 for i in range(16)]
    base = DeepConfConfig(method="deepconf_low", budget=16, n_init=16, window=4, width=16,
                          consensus_stop=False, min_voters=None)
    plain = run(base, FakeBackend(answers, confs))
    assert plain.totals["voters"] == 2
    floored = run(base.model_copy(update={"min_voters": 5}), FakeBackend(answers, confs))
    assert floored.threshold == confs[-5]  # the 5th most confident warm-up trace
    assert floored.totals["voters"] == 5
    assert {t.index for t in floored.traces if t.voted} == set(range(11, 16))


def test_voter_floor_counts_only_traces_that_answered_and_never_raises_the_threshold():
    confs = [1.0 + 0.25 * i for i in range(16)]
    answers = [i % 3 for i in range(16)]
    b = FakeBackend(answers, confs)
    orig = b.generate

    async def no_answer_on_top(index, settings):  # the 3 most confident traces say nothing
        out = await orig(index, settings)
        return {**out, "text": "no answer"} if index >= 13 else out

    b.generate = no_answer_on_top
    cfg = DeepConfConfig(method="deepconf_low", budget=16, n_init=16, window=4, width=16,
                         consensus_stop=False, min_voters=4)
    r = run(cfg, b)
    assert r.totals["voters"] == 4 and r.threshold == confs[9]
    # a floor already met by the percentile leaves the threshold where η put it (η 90: 15 vote)
    high = DeepConfConfig(method="deepconf_high", budget=16, n_init=16, window=4, width=16,
                          consensus_stop=False, min_voters=4)
    assert run(high, FakeBackend(answers, confs)).threshold == pytest.approx(
        np.percentile(confs, 10))


def test_consensus_after_warmup_starts_nothing_more():
    b = FakeBackend([4] * 32, [3.0 + 0.01 * i for i in range(32)])
    r = run(DeepConfConfig(budget=32, n_init=8, window=4, width=8), b)
    assert r.totals["consensus_reached"] and r.totals["traces_started"] == 8
    assert r.answer == "4" and r.vote["share"] == 1.0


class SequenceBackend(FakeBackend):
    """Trace i makes the token confidences seqs[i] (so its summaries differ), then answers."""

    def __init__(self, answers, seqs):
        super().__init__(answers, [min(q) for q in seqs], n_tokens=0)
        self.seqs = seqs

    async def generate(self, index, settings):
        out = await super().generate(index, settings)
        out["meta_info"]["deepconf_confidences"] = list(self.seqs[index])
        out["meta_info"]["completion_tokens"] = len(self.seqs[index])
        return out


def test_vote_confidence_names_the_summary_that_weighs_a_vote():
    from sglang_pr.deepconf.summary import KINDS, summarize
    from sglang_pr.deepconf.vote import weighted_vote

    # two traces say 1 and end unsure; one says 2, starts unsure and ends sure: every lowest
    # group is 1.0, so 1 wins 2 to 1; the tail favours 2 (9.0 > 2 x 1.0)
    answers = [1, 1, 2]
    seqs = [[5.0] * 4 + [1.0] * 4, [5.0] * 4 + [1.0] * 4, [1.0] * 4 + [9.0] * 4]
    got = {}
    for kind in KINDS:
        cfg = DeepConfConfig(method="sc", budget=3, width=3, window=2, weighted=True,
                             vote_confidence=kind)
        r = run(cfg, SequenceBackend(answers, seqs))
        weights = [summarize(q, 2).get(kind) for q in seqs]
        assert r.answer == weighted_vote([str(a) for a in answers], weights).answer, kind
        assert [t.weight for t in r.traces] == weights
        got[kind] = r.answer
    assert got["lowest_group"] == "1" and got["tail"] == "2"  # the field decides
    plain = run(DeepConfConfig(method="sc", budget=3, width=3, window=2, vote_confidence="tail"),
                SequenceBackend(answers, seqs))
    assert plain.answer == "1" and {t.weight for t in plain.traces} == {1.0}  # sc: plain


def test_consensus_mid_phase_aborts_running_traces():
    # warm-up splits 2 ways; later confident traces all say 9 and settle the vote
    answers = [1, 2] * 4 + [9] * 24
    confs = [2.0] * 8 + [6.0] * 24
    b = FakeBackend(answers, confs, delay=0.01)
    r = run(DeepConfConfig(method="deepconf_high", budget=32, n_init=8, window=4, width=6,
                           tau=0.75, weighted=True), b)  # confident 9s outweigh the warm-up
    assert r.totals["consensus_reached"] and r.answer == "9"
    assert r.totals["traces_started"] < 32
    aborted = [t for t in r.traces if t.finish_type == "abort"]
    assert aborted and {t.index for t in aborted} <= b.aborted
    assert r.totals["generated_tokens"] == sum(t.tokens for t in r.traces)


def test_cancelling_the_group_aborts_every_running_trace():
    b = FakeBackend([1] * 16, [3.0] * 16, delay=5.0)

    async def main():
        task = asyncio.ensure_future(GroupRun(DeepConfConfig(method="sc", budget=16, width=4),
                                              b).run())
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    assert len(b.started) == 4 and b.aborted == {0, 1, 2, 3}


def test_width_limits_concurrency():
    b = FakeBackend([1] * 10, [3.0] * 10)
    running, peak = 0, 0
    orig = b.generate

    async def counting(index, settings):
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        try:
            return await orig(index, settings)
        finally:
            running -= 1

    b.generate = counting
    run(DeepConfConfig(method="sc", budget=10, width=3), b)
    assert peak == 3


def test_a_refused_branch_fails_the_group_and_aborts_the_others():
    """SGLang refusing a branch (e.g. over the context length) refuses them all: the group ends
    with that error (a 400 on the routes) instead of N empty traces, and nothing keeps running."""
    b = FakeBackend([1] * 8, [3.0] * 8, delay=5.0)
    orig = b.generate

    async def refuse_the_third(index, settings):
        if index == 2:
            await asyncio.sleep(0.01)
            raise BranchRejected("max_new_tokens must be at least 0, got -5.", "max_new_tokens")
        return await orig(index, settings)

    b.generate = refuse_the_third
    with pytest.raises(BranchRejected, match="max_new_tokens"):
        run(DeepConfConfig(method="sc", budget=8, width=4), b)
    assert len(b.started) == 3 and b.aborted == {0, 1, 3}  # started 0-3; 2 itself refused
