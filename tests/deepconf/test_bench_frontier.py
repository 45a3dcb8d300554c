"""benchmarks/deepconf/bench_frontier.py without a server: an interrupted collect resumes and
keeps what it finished, bad input is one line naming the flag (exit 2), replay takes the
questions collected so far with --partial."""

import json
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from sglang_pr.deepconf.replay import (
    PoolTrace,
    read_pool_question,
    read_pool_split,
    write_pool_question,
)
from sglang_pr.model.task import ANSWER_PREFIX



@pytest.fixture(scope="module")
def bench(benchmark_module):
    return benchmark_module("deepconf/bench_frontier.py", "bench_frontier")


def fake_traces(truth: str, n: int, seed: int) -> list[PoolTrace]:
    """n traces: most say the truth, some say 0; seeded lengths and confidences."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        answer = truth if rng.random() < 0.7 else "0"
        tokens = int(rng.integers(8, 20))
        confs = tuple(float(c) for c in rng.uniform(1, 5, size=tokens))
        out.append(PoolTrace(f"x\n{ANSWER_PREFIX}{answer}", confs, {"type": "stop"}, tokens))
    return out


def collect_args(bench, root, *extra):
    return bench.parse_args(["collect", "--url", "http://unused", "--pool-dir", str(root),
                             "--questions", "3", "--tune-questions", "2", "--pool", "8", *extra])


def test_an_interrupted_collect_keeps_its_questions_and_resumes(bench, tmp_path, monkeypatch):
    sampled = []

    def fake_sample(url, prompt, args, n):
        if len(sampled) == 3 and not args.resume:
            raise KeyboardInterrupt  # killed midway, after 3 of 5 questions
        sampled.append(prompt)
        return fake_traces("7", n, len(sampled)), 0.1

    monkeypatch.setattr(sys.modules["frontier_collect"], "sample", fake_sample)
    with pytest.raises(KeyboardInterrupt):
        bench.run_collect(collect_args(bench, tmp_path))
    files = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.glob("*/*.json.gz"))
    assert files == ["reported/00000.json.gz", "tuning/00000.json.gz", "tuning/00001.json.gz"]
    assert not list(tmp_path.glob("*/*.tmp"))  # no half-written question
    # without --resume the finished rows are not overwritten: one line naming the flag
    with pytest.raises(SystemExit) as ei:
        bench.run_collect(collect_args(bench, tmp_path))
    assert ei.value.code == 2
    before = read_pool_question(tmp_path / "tuning" / "00000.json.gz")
    bench.run_collect(collect_args(bench, tmp_path, "--resume"))
    assert len(sampled) == 5  # only the two missing questions were sampled again
    assert len(list(tmp_path.glob("reported/*.json.gz"))) == 3
    assert read_pool_question(tmp_path / "tuning" / "00000.json.gz") == before
    # a resume with other settings is refused, naming the flag
    with pytest.raises(SystemExit) as ei:
        bench.run_collect(collect_args(bench, tmp_path, "--resume", "--temperature", "1.0"))
    assert ei.value.code == 2


def test_a_dataset_too_small_for_the_split_names_the_flag(bench, tmp_path, capsys):
    data = tmp_path / "d.jsonl"
    data.write_text("".join(json.dumps({"question": f"q{i}", "answer": i}) + "\n"
                            for i in range(5)))
    args = bench.parse_args(["collect", "--dataset", str(data), "--questions", "4",
                             "--tune-questions", "2", "--pool-dir", str(tmp_path / "p")])
    with pytest.raises(SystemExit) as ei:
        sys.modules["frontier_collect"].dataset_splits(args)
    assert ei.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("bench_frontier: --dataset:") and "the split needs 6" in err
    assert len(err.splitlines()) == 1


def test_bad_flags_are_one_line_exit_2(bench, capsys):
    for argv in (["replay", "--replays", "0"], ["replay", "--tune-variants", "5"],
                 ["replay", "--variants", "[]"]):
        with pytest.raises(SystemExit) as ei:
            bench.parse_args(argv)
        assert ei.value.code == 2
    assert "--replays" in capsys.readouterr().err


def write_pool(bench, root: Path, n_tune: int, n_rep: int) -> None:
    (root / "tuning").mkdir(parents=True)
    (root / "reported").mkdir()
    meta = {"model": "tiny-reasoner", "model_path": None, "source": "task", "temperature": 0.6,
            "top_p": 0.95, "max_new_tokens": 160, "k": 20, "pool": 16}
    (root / "meta.json").write_text(json.dumps(meta))
    for split, n in (("tuning", n_tune), ("reported", n_rep)):
        for i in range(n):
            write_pool_question(root / split / f"{i:05d}.json.gz", {
                "prompt": f"{split}{i}", "truth": "7", "wall_s": 1.0,
                "traces": fake_traces("7", 16, hash((split, i)) % 1000)})


def test_replay_of_a_partial_pool_needs_the_flag(bench, tmp_path, capsys):
    root = tmp_path / "pool"
    write_pool(bench, root, n_tune=4, n_rep=0)
    argv = ["replay", "--pool-dir", str(root), "--ns", "1", "2", "4", "8", "--budgets", "8",
            "--replays", "1", "--subsets", "20", "--out", str(tmp_path / "f.json"),
            "--tune-variants", '[{"name": "low", "method": "deepconf_low", "min_voters": 4}]']
    with pytest.raises(SystemExit) as ei:
        bench.run_replay(bench.parse_args(argv))
    assert ei.value.code == 2 and "--partial" in capsys.readouterr().err
    data = bench.run_replay(bench.parse_args(argv + ["--partial"]))
    assert data["partial"] and data["points"] == [] and data["n_questions"]["tuning"] == 4
    assert data["verdict"]["goal_met"] is None  # nothing reported yet: no verdict claimed
    assert data["chosen_lever"] == "low"  # the only lever is the rule's pick
    lever = data["levers"][0]
    assert lever["name"] == "low" and lever["fields"]["min_voters"] == 4
    assert [p["budget"] for p in lever["per_budget"]] == [8]
    # a pool of 16 covers budgets 8 and 16 of the grid, not the larger ones
    assert [c["budget"] for c in data["not_covered"]] == [32, 64, 128]


def test_concurrent_collect_writes_every_question_and_stops_on_a_failure(bench, tmp_path,
                                                                        monkeypatch):
    """--concurrency 3: all questions land in their own files whatever order they finish
    in; a failing question stops the run (nothing new starts) and keeps the finished ones."""
    import threading

    lock, calls = threading.Lock(), []

    def fake_sample(url, prompt, args, n):
        with lock:
            calls.append(prompt)
            k = len(calls)
        time.sleep(0.05)  # a request takes a while: the failure is seen before all have run
        if args.questions == 30 and k == 4:
            raise RuntimeError("server went away")
        return fake_traces("7", n, k), 0.01 * k

    monkeypatch.setattr(sys.modules["frontier_collect"], "sample", fake_sample)
    bench.run_collect(collect_args(bench, tmp_path / "a", "--concurrency", "3"))
    assert len(calls) == 5
    assert len(list((tmp_path / "a").glob("*/*.json.gz"))) == 5
    assert [len(read_pool_split(tmp_path / "a", s)) for s in ("tuning", "reported")] == [2, 3]
    assert read_pool_question(tmp_path / "a" / "tuning" / "00000.json.gz")["concurrency"] == 3
    calls.clear()
    with pytest.raises(RuntimeError, match="server went away"):
        bench.run_collect(bench.parse_args(["collect", "--url", "http://unused", "--pool-dir",
                                            str(tmp_path / "b"), "--questions", "30",
                                            "--tune-questions", "2", "--pool", "8",
                                            "--concurrency", "2"]))
    assert len(calls) <= 4 + 2  # at most the two in flight ran on; the rest never started
    assert len(list((tmp_path / "b").glob("*/*.json.gz"))) == len(calls) - 1


def test_a_server_that_stops_answering_is_one_line_and_keeps_the_finished(bench, tmp_path,
                                                                          monkeypatch, capsys):
    import requests

    calls = []

    def fake_sample(url, prompt, args, n):
        calls.append(prompt)
        if len(calls) == 3:
            raise requests.ConnectionError("Remote end closed connection without response")
        return fake_traces("7", n, len(calls)), 0.01

    monkeypatch.setattr(sys.modules["frontier_collect"], "sample", fake_sample)
    with pytest.raises(SystemExit) as e:
        bench.run_collect(collect_args(bench, tmp_path))
    assert e.value.code == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "stopped answering" in err and "--resume" in err
    # every question but the failed one is written: the two before it, and one the worker
    # may have started before the failure was seen
    assert len(list(tmp_path.glob("*/*.json.gz"))) == len(calls) - 1 >= 2


def test_replay_of_a_dataset_pool_reads_answers_by_last_number_and_names_the_file(bench,
                                                                                tmp_path):
    """A pool of a --dataset's questions (a chat model's plain answers) is scored with
    last_number without the flag, and its results go to a file of the model's own."""
    root = tmp_path / "pool"
    write_pool(bench, root, n_tune=0, n_rep=3)
    meta = json.loads((root / "meta.json").read_text())
    (root / "meta.json").write_text(json.dumps(
        {**meta, "model": "smollm2-135m", "source": ["h.jsonl", "d.jsonl"]}))
    for i in range(3):  # plain-language answers: no task answer prefix
        q = read_pool_question(root / "reported" / f"{i:05d}.json.gz")
        traces = [PoolTrace(f"So the total is {7 if j % 4 else 3}.", (2.0,) * 5,
                            {"type": "stop"}, 5) for j in range(16)]
        write_pool_question(root / "reported" / f"{i:05d}.json.gz", {**q, "traces": traces})
    argv = ["replay", "--pool-dir", str(root), "--ns", "1", "2", "4", "--budgets", "4",
            "--replays", "1", "--subsets", "20", "--partial"]
    args = bench.parse_args(argv)
    assert args.extractor is None and bench.default_out("smollm2-135m").name == \
        "deepconf_frontier_smollm2-135m.json"
    data = bench.run_replay(bench.parse_args(argv + ["--out", str(tmp_path / "f.json")]))
    sc1 = next(p for p in data["points"] if p["method"] == "sc" and p["budget"] == 1)
    assert sc1["accuracy"] == pytest.approx(0.75, abs=0.1) and sc1["model"] == "smollm2-135m"
    assert data["settings"]["extractor"] == "last_number"


def test_grow_from_keeps_the_smaller_pool_and_samples_only_the_rest(bench, tmp_path,
                                                                   monkeypatch):
    """--grow-from: each question starts from the smaller pool's traces, only pool - have
    are sampled, both requests are recorded, and replay's seconds per step counts each
    request's own steps (the grown question took two requests, not one of 12)."""
    asked = []

    def fake_sample(url, prompt, args, n):
        asked.append(n)
        return fake_traces("7", n, len(asked)), 2.0 * (len(asked) % 2 + 1)

    monkeypatch.setattr(sys.modules["frontier_collect"], "sample", fake_sample)
    bench.run_collect(collect_args(bench, tmp_path / "p8"))
    assert asked == [8] * 5
    grow = ["--pool", "12", "--grow-from", str(tmp_path / "p8")]
    bench.run_collect(collect_args(bench, tmp_path / "p12", *grow))
    assert asked == [8] * 5 + [4] * 5
    for split in ("tuning", "reported"):
        small = read_pool_split(tmp_path / "p8", split)
        big = read_pool_split(tmp_path / "p12", split)
        for s, b in zip(small, big, strict=True):
            assert b["traces"][:8] == s["traces"] and len(b["traces"]) == 12
            assert [r["n"] for r in b["requests"]] == [8, 4]
            assert b["wall_s"] == pytest.approx(s["wall_s"] + b["requests"][1]["wall_s"])
            assert b["requests"][0]["steps"] == max(t.tokens for t in s["traces"])
    qs = read_pool_split(tmp_path / "p12", "reported")
    direct = sum(q["wall_s"] for q in qs) / sum(
        max(t.tokens for t in q["traces"][:8]) + max(t.tokens for t in q["traces"][8:])
        for q in qs)
    assert bench.seconds_per_step(qs) == pytest.approx(direct)
    # a base of other settings, or not smaller than --pool, is one line naming the flag
    for extra in (["--pool", "12", "--temperature", "1.0"], ["--pool", "8"]):
        with pytest.raises(SystemExit) as ei:
            bench.run_collect(collect_args(bench, tmp_path / "bad", *extra, "--grow-from",
                                           str(tmp_path / "p8")))
        assert ei.value.code == 2
    assert len(asked) == 10
