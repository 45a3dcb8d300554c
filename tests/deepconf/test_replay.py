"""Replay (deepconf/replay.py): the real GroupRun on a pre-sampled pool, on a virtual clock."""

import asyncio

import numpy as np
import pytest

from sglang_pr.deepconf.config import DeepConfConfig, TraceSettings
from sglang_pr.deepconf.replay import (
    PoolTrace,
    ReplayBackend,
    cut,
    read_pool_question,
    replay_group,
    replay_questions,
    run_virtual,
    write_pool_question,
)
from sglang_pr.deepconf.summary import group_confidences, percentile_threshold
from sglang_pr.deepconf.vote import weighted_vote
from sglang_pr.model.task import ANSWER_PREFIX


def trace(answer, confs, finish="stop"):
    confs = tuple(float(c) for c in confs)
    return PoolTrace(text=f"work\n{ANSWER_PREFIX}{answer}" if answer is not None else "work",
                     confidences=confs, finish_reason={"type": finish}, tokens=len(confs),
                     output_ids=tuple(range(len(confs))))


def direct_stop(confs, window, threshold):
    """Tokens generated under the scheduler's rule, written out: the first full window (ending
    before the last token) whose mean is below the threshold; else the whole trace."""
    for end in range(window, len(confs)):  # windows confs[end-window:end], last token excluded
        if sum(confs[end - window:end]) / window < threshold:
            return end
    return len(confs)


def random_pool(rng, size, answers=(1, 2, 3), lengths=(20, 60)):
    out = []
    for _ in range(size):
        n = int(rng.integers(*lengths))
        out.append(trace(int(rng.choice(answers)), rng.uniform(0.5, 3.0, size=n)))
    return out


def test_cut_is_where_the_tracker_stops():
    rng = np.random.default_rng(0)
    for _ in range(200):
        confs = rng.uniform(0.5, 3.0, size=int(rng.integers(5, 40))).tolist()
        w = int(rng.integers(1, 6))
        thr = float(rng.uniform(0.8, 2.5))
        n, finish = cut(trace(1, confs), TraceSettings(window=w, threshold=thr))
        assert n == direct_stop(confs, w, thr)
        if n < len(confs):
            assert finish["type"] == "low_confidence" and finish["tokens"] == n
            assert finish["confidence"] == pytest.approx(sum(confs[n - w:n]) / w)
        else:
            assert finish == {"type": "stop"}


def test_a_dip_on_the_last_token_does_not_cut():
    # the trace finishes on its own on its last step: the natural finish wins
    t = trace(1, [3, 3, 3, 0.1])
    assert cut(t, TraceSettings(window=1, threshold=1.0)) == (4, {"type": "stop"})
    assert cut(t, TraceSettings(window=1, threshold=3.5))[0] == 1


@pytest.mark.parametrize("thr", [None, float("-inf")])
def test_without_threshold_traces_come_back_whole(thr):
    pool = random_pool(np.random.default_rng(1), 8)
    b = ReplayBackend(pool)

    async def all_at_once():
        settings = TraceSettings(window=4, threshold=thr)
        return await asyncio.gather(*(b.generate(i, settings) for i in range(8)))

    outs, steps = run_virtual(all_at_once())
    for t, out in zip(pool, outs):
        assert out["text"] == t.text and out["meta_info"]["completion_tokens"] == t.tokens
        assert out["meta_info"]["finish_reason"] == {"type": "stop"}
        assert out["meta_info"]["deepconf_confidences"] == list(t.confidences)
    assert steps == max(t.tokens for t in pool)  # all ran at once, one token per step


def test_sc_replay_is_the_direct_majority_over_the_same_traces():
    rng = np.random.default_rng(2)
    pool = random_pool(rng, 40, answers=(1, 2))  # two answers: ties happen at even N
    for seed in range(20):
        n = int(rng.integers(1, 41))
        r = replay_group(DeepConfConfig(method="sc", budget=n, width=7), pool, seed=seed)
        used = [pool[i] for i in r.order[:n]]
        assert r.group.answer == weighted_vote([t.text.split()[-1] for t in used]).answer
        assert r.tokens == sum(t.tokens for t in used)


def test_order_is_seeded():
    pool = random_pool(np.random.default_rng(3), 30)
    cfg = DeepConfConfig(method="deepconf_low", budget=30, n_init=8, window=4, width=5)
    a, b = (replay_group(cfg, pool, seed=11) for _ in range(2))
    assert a.order == b.order and a.tokens == b.tokens and a.steps == b.steps
    assert [t.tokens for t in a.group.traces] == [t.tokens for t in b.group.traces]
    assert replay_group(cfg, pool, seed=12).order != a.order


def test_deepconf_cuts_later_traces_at_the_warmup_threshold():
    rng = np.random.default_rng(4)
    pool = random_pool(rng, 48)
    w = 4
    cfg = DeepConfConfig(method="deepconf_low", budget=48, n_init=16, window=w, width=48,
                         consensus_stop=False, min_voters=None)  # the bare η rule, no floor
    r = replay_group(cfg, pool)  # the pool's own order
    lows = [group_confidences(t.confidences, w).min() for t in pool[:16]]
    assert r.group.threshold == pytest.approx(percentile_threshold(lows, 10.0))
    for rec, t in zip(r.group.traces, pool):
        want = t.tokens if rec.index < 16 else direct_stop(list(t.confidences), w,
                                                           r.group.threshold)
        assert rec.tokens == want
        assert (rec.finish_type == "low_confidence") == (want < t.tokens)
    assert r.steps == max(t.tokens for t in pool[:16]) + max(rec.tokens for rec in
                                                              r.group.traces[16:])


def test_consensus_abort_charges_tokens_until_the_abort():
    # traces 0-3 answer 7 in 10 tokens; 4-5 would take 50. Width 6: all start at step 0;
    # at step 10 the vote is 4/4 for 7, so 4 and 5 are aborted having made 10 tokens each,
    # and 6-7 never start.
    pool = [trace(7, [2.0] * 10)] * 4 + [trace(8, [2.0] * 50)] * 4
    cfg = DeepConfConfig(method="sc", budget=8, width=6, consensus_stop=True, tau=0.95)
    r = replay_group(cfg, pool)
    assert r.group.answer == "7" and r.group.totals["consensus_reached"]
    assert [t.tokens for t in r.group.traces] == [10] * 6
    assert [t.finish_type for t in r.group.traces] == ["stop"] * 4 + ["abort"] * 2
    assert r.tokens == 60 and r.steps == 10


def test_abort_charges_each_trace_from_its_own_start():
    pool = [trace(1, [1.0] * 100)] * 2
    b = ReplayBackend(pool)
    settings = TraceSettings(window=4)

    async def scenario():
        first = asyncio.ensure_future(b.generate(0, settings))
        await asyncio.sleep(5)
        second = asyncio.ensure_future(b.generate(1, settings))
        await asyncio.sleep(7)  # step 12
        b.abort(0)
        b.abort(1)
        return await first, await second

    (a, c), steps = run_virtual(scenario())
    assert steps == 12
    assert a["meta_info"]["completion_tokens"] == 12 and c["meta_info"]["completion_tokens"] == 7
    assert a["meta_info"]["finish_reason"]["type"] == "abort"
    assert a["output_ids"] == list(range(12)) and a["text"] == ""  # no decode given


def test_decode_gives_the_prefix_text_of_a_cut_trace():
    t = trace(1, [3, 3, 0.1, 0.1, 3])
    b = ReplayBackend([t], decode=lambda ids: ",".join(map(str, ids)))
    out, _ = run_virtual(b.generate(0, TraceSettings(window=1, threshold=1.0)))
    assert out["meta_info"]["completion_tokens"] == 3 and out["text"] == "0,1,2"


def test_k_and_budget_are_fixed_by_the_pool():
    pool = random_pool(np.random.default_rng(5), 4)
    with pytest.raises(ValueError, match="k is fixed by the pool"):
        replay_group(DeepConfConfig(method="sc", budget=4, k=5), pool, k=20)
    with pytest.raises(ValueError, match="exceeds the replay pool"):
        replay_group(DeepConfConfig(method="sc", budget=5), pool)


def test_pool_trace_round_trip_and_validation():
    t = trace(3, [1.23456789, 2.0])
    back = PoolTrace.from_dict(t.to_dict())
    assert back.confidences == (1.234568, 2.0) and back.text == t.text and back.tokens == 2
    resp = {"text": "a", "output_ids": [5], "meta_info": {
        "deepconf_confidences": [0.5], "completion_tokens": 1, "finish_reason": {"type": "stop"}}}
    assert PoolTrace.from_response(resp).confidences == (0.5,)
    with pytest.raises(ValueError, match="one confidence per token"):
        PoolTrace("a", (1.0,), {}, 2)
    with pytest.raises(ValueError, match="deepconf_confidences"):
        PoolTrace.from_response({"text": "a", "meta_info": {"completion_tokens": 1}})


def test_replay_questions_averages_seeded_groups_per_question():
    rng = np.random.default_rng(6)
    pools = [random_pool(rng, 12) for _ in range(3)]
    cfg = DeepConfConfig(method="deepconf_high", budget=10, n_init=4, window=4, width=3)
    hits, tokens, steps = replay_questions(cfg, pools, ["1", "2", "3"], replays=3, seed=9)
    for q, pool in enumerate(pools):
        runs = [replay_group(cfg, pool, seed=(9, q, r)) for r in range(3)]
        assert hits[q] == pytest.approx(np.mean([r.group.answer == str(q + 1) for r in runs]))
        assert tokens[q] == pytest.approx(np.mean([r.tokens for r in runs]))
        assert steps[q] == pytest.approx(np.mean([r.steps for r in runs]))


def test_pool_question_file_round_trip(tmp_path):
    pool = random_pool(np.random.default_rng(7), 3)
    path = tmp_path / "00000.json.gz"
    write_pool_question(path, {"prompt": "Q", "truth": "1", "wall_s": 1.5, "traces": pool})
    back = read_pool_question(path)
    assert back["prompt"] == "Q" and back["wall_s"] == 1.5 and len(back["traces"]) == 3
    assert [t.tokens for t in back["traces"]] == [t.tokens for t in pool]
    assert not list(tmp_path.glob("*.tmp"))  # written through a temporary file, then renamed
