"""The demo helper aggregates per method and formats a side-by-side table (no server)."""

import numpy as np
import pytest

from sglang_pr.cli import side_by_side as demo
from sglang_pr.deepconf.config import SAMPLING, SHIPPED_MODEL_WINDOW, DeepConfConfig
from sglang_pr.model.task import heldout_set


def test_side_by_side_aggregates(monkeypatch):
    problems = heldout_set(3)
    calls, seen = [], []

    def fake_run_group(url, prompt, deepconf, sampling, timeout_s=900.0):
        calls.append((prompt, deepconf["method"]))
        seen.append((deepconf, sampling))
        p = next(q for q in problems if q.prompt == prompt)
        sc = deepconf["method"] == "sc"
        answer = str(p.answer) if sc or p is not problems[0] else "wrong"
        totals = {"generated_tokens": 100 if sc else 30, "traces_started": 8 if sc else 3,
                  "stopped_early": 0 if sc else 1, "consensus_reached": not sc,
                  "aborted": 0, "wall_s": 0.4 if sc else 0.1}
        return {"answer": answer, "totals": totals}, 0.5 if sc else 0.2

    monkeypatch.setattr(demo, "run_group", fake_run_group)
    rows = demo.side_by_side("http://x", n_questions=3, budget=8)
    assert [p for p, _ in calls[::2]] == [p.prompt for p in problems]  # interleaved per question
    # the project's sampling and the shipped model's window unless told otherwise; the whole
    # budget at once; the warm-up left to the config's budget rule
    assert all(sp == SAMPLING.model_dump() for _, sp in seen)
    assert all((cfg["window"], cfg["budget"], cfg["width"]) == (SHIPPED_MODEL_WINDOW, 8, 8)
               and "n_init" not in cfg for cfg, _ in seen)
    sc, low = rows
    assert (sc.method, low.method) == ("sc", "deepconf_low")
    assert sc.accuracy == 1.0 and abs(low.accuracy - 2 / 3) < 1e-9
    assert (sc.generated_tokens, low.generated_tokens) == (300, 90)
    assert low.consensus == 3 and low.stopped_early == 3
    assert abs(sc.wall_s - 1.5) < 1e-9 and abs(low.server_wall_s - 0.3) < 1e-9
    row = low.row()
    assert "answers" not in row and row["tokens_per_question"] == 30 and row["aborted"] == 0
    table = demo.format_table(rows)
    assert "deepconf_low" in table and "0.30" in table  # 90 / 300 tokens vs sc
    assert low.hits == [False, True, True] and sc.hits == [True] * 3
    diff = demo.format_difference(rows)
    assert diff.startswith("deepconf_low - sc accuracy at equal N (8 traces): -0.333")
    assert "over 3 questions" in diff
    # the fakes carry no traces: no equal-token line can be computed, and it says so
    assert "outside SC's measured range" in demo.format_equal_tokens(rows)


def test_a_seed_gives_every_method_the_same_seeds_per_question(monkeypatch):
    seen = []

    def fake_run_group(url, prompt, deepconf, sampling, timeout_s=900.0):
        seen.append((prompt, deepconf["method"], sampling.get("sampling_seed")))
        totals = {"generated_tokens": 1, "traces_started": 1, "stopped_early": 0,
                  "consensus_reached": False, "aborted": 0, "wall_s": 0.0}
        return {"answer": None, "totals": totals}, 0.0

    monkeypatch.setattr(demo, "run_group", fake_run_group)
    demo.side_by_side("http://x", n_questions=3, budget=8, seed=3)
    prompts = [p.prompt for p in heldout_set(3)]
    # question q: 3 x 2**20 + 8q for both methods; branch i adds i, so no two branches share one
    assert seen == [(p, m, 3 * 2**20 + 8 * q) for q, p in enumerate(prompts)
                    for m in ("sc", "deepconf_low")]
    seen.clear()
    demo.side_by_side("http://x", n_questions=1, budget=8)
    assert seen == [(prompts[0], "sc", None), (prompts[0], "deepconf_low", None)]


def test_paired_interval_covers_the_difference_and_narrows_with_questions():
    a = [True, False] * 10  # accuracy 0.5
    b = [True, True, True, False] * 5  # accuracy 0.75
    lo, hi = demo.paired_diff_ci(a, b)
    assert lo < -0.25 < hi and hi < 0  # 20 questions: the gap is more than noise
    lo4, hi4 = demo.paired_diff_ci(a * 4, b * 4)
    assert lo < lo4 < -0.25 < hi4 < hi  # 80 questions: narrower
    assert demo.paired_diff_ci(a, a) == (0.0, 0.0)
    for bad in ((a, b[:3]), ([], [])):
        with pytest.raises(ValueError, match="equally long"):
            demo.paired_diff_ci(*bad)


def test_side_by_side_overrides_sampling_and_leaves_the_warmup_to_the_config(monkeypatch):
    seen = []

    def fake_run_group(url, prompt, deepconf, sampling, timeout_s=900.0):
        seen.append((deepconf, sampling))
        return {"answer": None, "totals": {"generated_tokens": 1, "traces_started": 1,
                                           "stopped_early": 0, "consensus_reached": False,
                                           "aborted": 0, "wall_s": 0.0}}, 0.0

    monkeypatch.setattr(demo, "run_group", fake_run_group)
    demo.side_by_side("http://x", n_questions=1, budget=64, window=4,
                      sampling={"max_new_tokens": 48})
    want = {"temperature": SAMPLING.temperature, "top_p": SAMPLING.top_p, "max_new_tokens": 48}
    assert [sp for _, sp in seen] == [want] * 2
    assert all("n_init" not in cfg for cfg, _ in seen)  # the config's rule sizes the warm-up
    assert DeepConfConfig(budget=64).warmup <= 64 and DeepConfConfig(budget=2).warmup <= 2
    assert [cfg["window"] for cfg, _ in seen] == [4, 4]


def group_response(answers, tokens, truth_voted):
    return {"answer": truth_voted, "traces": [{"answer": a, "tokens": t}
                                              for a, t in zip(answers, tokens)],
            "totals": {"generated_tokens": sum(tokens), "traces_started": len(answers),
                       "stopped_early": 0, "consensus_reached": False, "aborted": 0,
                       "wall_s": 0.0}}


def test_equal_tokens_pairs_deepconf_with_sc_from_scs_own_traces():
    """Direct computation: every SC trace of a question gives the same answer, so SC's expected
    correctness is the same at every N (1 or 0 per question); 10 tokens a trace, so SC at N
    costs 10 N. DeepConf right on 3 of 4 questions at 40 tokens each: SC there is N = 4,
    accuracy 0.5 (questions 0, 1 right); per-question differences 0, -1, +1, +1: mean +0.25.
    """
    sc, low = demo.MethodStats("sc", 8), demo.MethodStats("deepconf_low", 8)
    truths = ["1", "2", "3", "4"]
    sc_right = [True, True, False, False]
    for t, right in zip(truths, sc_right):
        a = t if right else "9"
        sc.add(group_response([a] * 8, [10] * 8, a), 0.0, t)
    low_right = [True, False, True, True]
    for t, right in zip(truths, low_right):
        low.add({"answer": t if right else "9", "totals": {
            "generated_tokens": 40, "traces_started": 4, "stopped_early": 0,
            "consensus_reached": True, "aborted": 0, "wall_s": 0.0}}, 0.0, t)
    d = demo.equal_tokens(sc, low)
    assert d.sc_n == pytest.approx(4.0) and d.sc_accuracy == pytest.approx(0.5)
    diffs = np.array(low_right, dtype=float) - np.array(sc_right, dtype=float)  # [0,-1,1,1]
    assert d.diff == pytest.approx(diffs.mean()) == pytest.approx(0.25)
    assert d.lo <= 0.25 <= d.hi and d.lo >= -1 and d.hi <= 1
    line = demo.format_equal_tokens([sc, low])
    assert line.startswith("deepconf_low - sc at equal tokens (40 tokens/question = SC at N=4.0")
    assert "+0.250" in line
    # spending more than SC's 8 traces: outside the measured range, said so, no number
    over = demo.MethodStats("deepconf_low", 8)
    for t in truths:
        over.add({"answer": t, "totals": {"generated_tokens": 100, "traces_started": 10,
                                          "stopped_early": 0, "consensus_reached": False,
                                          "aborted": 0, "wall_s": 0.0}}, 0.0, t)
    assert demo.equal_tokens(sc, over) is None
    assert "outside SC's measured range" in demo.format_equal_tokens([sc, over])
