"""benchmarks/model_quality.py: flags -> plan (checked before any server starts), the result
file's layout (top-level shipped keys + a ``models`` list), and the sampling time budget."""

from __future__ import annotations

import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest

from sglang_pr.data import ARITH_WORDS_HELDOUT
from sglang_pr.model import SHIPPED_MODEL_DIR



@pytest.fixture(scope="module")
def mq(benchmark_module):
    return benchmark_module("model_quality.py", "model_quality_under_test")


@pytest.fixture
def folder(tmp_path):
    """A model folder that is not the shipped model (no server is started by these tests)."""
    path = tmp_path / "chat-model"
    path.mkdir()
    (path / "config.json").write_text("{}")
    (path / "tokenizer.json").write_text("{}")
    return path


def _plan(mq, *argv):
    return mq.plan_from_args(mq.parse_args(list(argv)))


def test_shipped_model_runs_its_own_task_by_default(mq):
    plan = _plan(mq)
    assert (plan.model, plan.dataset, plan.extractor) == ("tiny-reasoner", None, "task")
    assert plan.model_dir == SHIPPED_MODEL_DIR
    assert plan.cfg == mq.BenchConfig()


def test_other_model_gets_the_heldout_split_and_last_number(mq, folder):
    plan = _plan(mq, "--model-path", str(folder))
    assert (plan.model, plan.dataset, plan.extractor) == (str(folder), ARITH_WORDS_HELDOUT,
                                                          "last_number")
    assert plan.cfg == mq.DATASET_CONFIG


def test_flags_override_the_defaults(mq, folder, tmp_path):
    data = tmp_path / "q.jsonl"
    data.write_text('{"question": "1+1?", "answer": 2}\n')
    plan = _plan(mq, "--model-path", str(folder), "--dataset", str(data), "--samples", "4",
                 "--temperature", "0.5", "--extractor", "regex", "--answer-regex", r"is (\d+)")
    assert (plan.dataset, plan.extractor, plan.answer_regex) == (data, "regex", r"is (\d+)")
    assert plan.cfg == replace(mq.DATASET_CONFIG, samples=4, temperature=0.5)


@pytest.mark.parametrize("argv,needle", [
    (["--extractor", "regex"], "--answer-regex goes with --extractor regex"),
    (["--answer-regex", "x"], "--answer-regex goes with --extractor regex"),
    (["--extractor", "regex", "--answer-regex", "(unclosed"], "--answer-regex '(unclosed'"),
    (["--samples", "0"], "--samples: must be >= 1"),
    (["--temperature", "-1"], "--temperature: must be >= 0"),
])
def test_bad_flags_are_one_usage_error(mq, folder, argv, needle):
    with pytest.raises(mq.UsageError, match=needle.replace("(", r"\(")):
        _plan(mq, "--model-path", str(folder), *argv)


def test_shipped_task_takes_no_other_extractor(mq):
    with pytest.raises(mq.UsageError, match="--extractor boxed: the shipped task"):
        _plan(mq, "--extractor", "boxed")


def _main_error(mq, monkeypatch, capsys, *argv) -> str:
    def no_server(*a, **k):
        raise AssertionError("a server was started for bad input")

    monkeypatch.setattr(mq, "launch", no_server)
    assert mq.main(list(argv)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    return err[0]


def test_dataset_line_without_answer_exits_2_naming_file_and_line(mq, folder, tmp_path,
                                                                  monkeypatch, capsys):
    data = tmp_path / "bad.jsonl"
    data.write_text('{"question": "1+1?", "answer": 2}\n{"question": "2+2?"}\n')
    line = _main_error(mq, monkeypatch, capsys, "--model-path", str(folder), "--dataset",
                       str(data), "--out", str(tmp_path / "out.json"))
    assert line == f"model_quality: error: {data}:2: no 'answer' field"
    assert not (tmp_path / "out.json").exists()


def test_unknown_model_exits_2_listing_the_names(mq, tmp_path, monkeypatch, capsys):
    line = _main_error(mq, monkeypatch, capsys, "--model-path", "smollm3", "--out",
                       str(tmp_path / "out.json"))
    assert line.startswith("model_quality: error: 'smollm3' is neither a folder nor")
    assert line.endswith("known: tiny-reasoner, smollm2-135m")


def test_folder_without_tokenizer_exits_2_naming_it(mq, folder, tmp_path, monkeypatch, capsys):
    (folder / "tokenizer.json").unlink()
    line = _main_error(mq, monkeypatch, capsys, "--model-path", str(folder))
    assert line.startswith(f"model_quality: error: {folder / 'tokenizer.json'}: missing")


def _top() -> dict:
    return {"pass_at_1": 0.5, "n_samples": 32, "majority_at_32": 0.66, "n_questions": 200,
            "mean_trace_tokens": 62.43, "unfinished_traces": 64,
            "confidence": [{"window": 8, "auroc": 0.7}, {"window": 16, "auroc": 0.75561}],
            "config": {"temperature": 1.0, "max_new_tokens": 160}, "date": "d0", "command": "c0"}


def _entry(model="smollm2-135m", p1=0.3) -> dict:
    return {"model": model, "dataset": "sglang_pr/assets/datasets/arith_words_heldout.jsonl",
            "pass_at_1": p1, "majority_at_n": 0.6, "samples": 16, "by_kind": {}}


def test_merge_keeps_the_top_level_keys_and_adds_the_entry(mq):
    merged = mq.merge_results(_top(), None, _entry())
    assert {k: merged[k] for k in _top()} == _top()  # the shipped model's keys are untouched
    tiny, smol = merged["models"]
    assert set(tiny) == set(sys.modules["model_quality_report"].ENTRY_KEYS)
    assert set(sys.modules["model_quality_report"].ENTRY_KEYS) <= set(smol)  # same keys, None where not measured
    assert (tiny["model"], tiny["majority_at_n"], tiny["auroc_across"]) == \
        ("tiny-reasoner", 0.66, 0.7556)
    assert tiny["truncated_share"] == round(64 / (32 * 200), 4)
    assert smol["auroc_within"] is None and smol["by_kind"] == {}


def test_a_rerun_replaces_only_its_own_entry(mq):
    first = mq.merge_results(_top(), None, _entry(p1=0.3))
    other = _entry(model="/some/folder", p1=0.1)
    second = mq.merge_results(json.loads(json.dumps(first)), None, other)
    third = mq.merge_results(second, None, _entry(p1=0.35))
    assert [(e["model"], e["pass_at_1"]) for e in third["models"]] == [
        ("tiny-reasoner", 0.5), ("/some/folder", 0.1), ("smollm2-135m", 0.35)]


def test_a_shipped_task_run_keeps_the_other_models(mq):
    first = mq.merge_results(_top(), None, _entry())
    top = {**_top(), "pass_at_1": 0.52, "date": "d1"}
    merged = mq.merge_results(first, top, None)
    assert merged["pass_at_1"] == 0.52
    assert [(e["model"], e["pass_at_1"]) for e in merged["models"]] == [
        ("tiny-reasoner", 0.52), ("smollm2-135m", 0.3)]


def test_time_budget_scores_a_prefix_of_the_questions(mq):
    cfg = replace(mq.DATASET_CONFIG, concurrency=2, max_sampling_s=0.3)

    def one(prompt):
        time.sleep(0.2)
        return [{"prompt": prompt}]

    out = mq._in_order_until(one, [str(i) for i in range(20)], cfg)
    assert 2 <= len(out) <= 6  # ~2 rounds of 2 started before the budget ran out
    assert [o[0]["prompt"] for o in out] == [str(i) for i in range(len(out))]
    full = mq._in_order_until(one, ["a", "b", "c"], replace(cfg, max_sampling_s=0.0))
    assert [o[0]["prompt"] for o in full] == ["a", "b", "c"]


def _write_pool(root: Path, model: str, dataset: Path, rows: list[tuple[str, list[str]]]):
    """A frontier pool (bench_frontier.py collect's layout): meta.json + one file per question
    of the reported split, each trace's confidence falling where its text is wrong."""
    from sglang_pr.deepconf.replay import PoolTrace, write_pool_question

    (root / "reported").mkdir(parents=True)
    (root / "meta.json").write_text(json.dumps({
        "model": model, "source": [str(dataset), str(dataset)], "temperature": 0.7,
        "top_p": 1.0, "max_new_tokens": 160, "k": 20, "pool": len(rows[0][1])}))
    for i, (truth, texts) in enumerate(rows):
        traces = [PoolTrace(text=t, confidences=(3.0,) * 20 if t.endswith(truth) else
                            (3.0,) * 10 + (0.5,) * 10, finish_reason={"type": "stop"},
                            tokens=20) for t in texts]
        write_pool_question(root / "reported" / f"{i:05d}.json.gz",
                            {"prompt": f"q{i}", "truth": truth, "wall_s": 2.0,
                             "traces": traces})


def test_from_pool_scores_the_pools_traces_like_a_sampled_run(mq, folder, tmp_path):
    data = tmp_path / "q.jsonl"
    data.write_text('{"question": "1+1?", "answer": "2"}\n{"question": "2+3?", "answer": "5"}\n'
                    '{"question": "3+3?", "answer": "6"}\n')
    pool = tmp_path / "pool"
    _write_pool(pool, str(folder), data, [("2", ["it is 2", "it is 3", "it is 2", "2"]),
                                          ("5", ["5", "4", "4", "so 4"])])
    plan = _plan(mq, "--model-path", str(folder), "--dataset", str(data), "--from-pool",
                 str(pool))
    entry = mq.run_dataset(plan)
    # two of the three questions were collected: scored on those, with the pool's settings
    assert (entry["n_questions"], entry["samples"], entry["temperature"]) == (2, 4, 0.7)
    assert entry["pass_at_1"] == pytest.approx((3 / 4 + 1 / 4) / 2)
    assert entry["majority_at_n"] == pytest.approx(0.5)  # 2 wins, 4 beats 5
    # the wrong traces' window-16 lowest group is lower: AUROC 1 within and across
    assert (entry["auroc_within"], entry["auroc_across"]) == (1.0, 1.0)
    assert entry["sampling_wall_s"] == 4.0 and "frontier pool" in entry["source"]


def test_from_pool_of_another_model_or_without_a_dataset_is_refused(mq, folder, tmp_path,
                                                                    monkeypatch, capsys):
    data = tmp_path / "q.jsonl"
    data.write_text('{"question": "1+1?", "answer": "2"}\n')
    pool = tmp_path / "pool"
    _write_pool(pool, "other-model", data, [("2", ["2", "3"])])
    plan = _plan(mq, "--model-path", str(folder), "--dataset", str(data), "--from-pool",
                 str(pool))
    with pytest.raises(mq.UsageError, match="--from-pool: .* holds other-model"):
        mq.run_dataset(plan)
    line = _main_error(mq, monkeypatch, capsys, "--from-pool", str(pool))
    assert line == (f"model_quality: error: --from-pool {pool}: needs a --dataset run (the "
                    "shipped task samples its own)")
