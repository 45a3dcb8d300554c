"""The task generator, completion format, answer extraction and prompt parsing."""

from __future__ import annotations

import itertools
import random

import pytest

from sglang_pr.model import task
from sglang_pr.model.task import Problem


def take(split, seed, n):
    return list(itertools.islice(task.problems(split, seed), n))


def test_problems_are_deterministic_per_seed():
    assert take("train", 3, 50) == take("train", 3, 50)
    assert take("train", 3, 50) != take("train", 4, 50)
    assert task.heldout_set(40, seed=1) == task.heldout_set(40, seed=1)


def test_difficulty_and_value_ranges():
    ps = take("train", 0, 3000)
    assert {len(p.ops) for p in ps} == set(range(task.MIN_STEPS, task.MAX_STEPS + 1))
    assert {op for p in ps for op, _ in p.ops} == set(task.OPS)
    assert {d for p in ps for _, d in p.ops} == set(range(1, 10))
    assert all(0 <= p.start < task.MODULUS and 0 <= p.answer < task.MODULUS for p in ps)


def test_random_problem_rejects_out_of_range_steps():
    rng = random.Random(0)
    assert len(task.random_problem(rng, 5).ops) == 5
    for bad in (task.MIN_STEPS - 1, task.MAX_STEPS + 1):
        with pytest.raises(ValueError):
            task.random_problem(rng, bad)


def test_train_and_heldout_are_disjoint():
    train = take("train", 0, 20000)
    held = task.heldout_set(400)
    assert all(p.split == "train" for p in train)
    assert all(p.split == "heldout" for p in held)
    assert len({p.prompt for p in held}) == 400  # distinct
    assert not {p.prompt for p in train} & {p.prompt for p in held}
    # The split is a function of the text alone: another seed cannot move a question.
    assert not {p.prompt for p in take("train", 7, 5000)} & {p.prompt for p in held}


def test_heldout_fraction_is_about_one_in_sixteen():
    rng = random.Random(5)
    ps = [task.random_problem(rng) for _ in range(8000)]
    frac = sum(p.split == "heldout" for p in ps) / len(ps)
    assert 0.04 < frac < 0.085


def test_completion_format_worked_example():
    p = Problem(17, (("*", 6), ("+", 9)))
    assert p.prompt == "Q: 17 a*6 b+9\nA:\n"
    assert p.completion == "a:17*6=102>2\nb:2+9=11\n#### 11"
    assert p.answer == 11


def test_completion_format_negative_and_wraparound():
    p = Problem(3, (("-", 5), ("+", 4), ("*", 1)))
    assert p.completion == "a:3-5=-2>98\nb:98+4=102>2\nc:2*1=2\n#### 2"
    assert [s[4] for s in p.steps] == [98, 2, 2]


def test_completion_lines_chain_previous_result():
    for p in take("heldout", 2, 200):
        lines = p.completion.split("\n")
        assert len(lines) == len(p.ops) + 1 and lines[-1] == f"#### {p.answer}"
        prev = p.start
        for label, line, (op, d) in zip(task.LABELS, lines, p.ops):
            assert line.startswith(f"{label}:{prev}{op}{d}=")
            assert f" {label}{op}{d}" in p.prompt  # the label finds the operation in the prompt
            prev = int(line.split(">")[-1]) if ">" in line else int(line.split("=")[1])
        assert prev == p.answer


@pytest.mark.parametrize(
    "text, expected",
    [
        ("a:17*6=102>2\nb:2+9=11\n#### 11", 11),
        ("no answer here", None),
        ("", None),
        ("#### x", None),
        ("#### 3\n#### 7", 7),  # several answers: the last one counts
        ("#### -4", -4),
        ("####12", 12),
        ("1+2=3\n#### 42\n", 42),
    ],
)
def test_extract_answer(text, expected):
    assert task.extract_answer(text) == expected


def test_is_correct():
    p = Problem(17, (("*", 6), ("+", 9)))
    assert task.is_correct(p.completion, p)
    assert not task.is_correct("a:17*6=102>2\nb:2+9=12\n#### 12", p)
    assert not task.is_correct("a:17*6=102>2\nb:2+9=11", p)  # never answered
    assert task.is_correct("#### 5\n#### 11", p)


def test_parse_prompt_round_trip():
    for p in take("train", 1, 300) + task.heldout_set(50):
        assert task.parse_prompt(p.prompt) == p


@pytest.mark.parametrize(
    "bad",
    [
        "Q: 17 a*6 b+9\n",  # no answer cue
        "17 a*6 b+9\nA:\n",
        "Q: 17 a*16 b+9\nA:\n",  # operands are single digits
        "Q: 17 a/6 b+9\nA:\n",
        "Q: 17 *6 +9\nA:\n",  # unlabelled
        "Q: 17 a*6 c+9\nA:\n",  # labels out of order
        "Q: 17 a*6\nA:\n",  # one step: below MIN_STEPS
    ],
)
def test_parse_prompt_rejects_other_text(bad):
    with pytest.raises(ValueError):
        task.parse_prompt(bad)


def test_distinct_problems_keep_stream_order_and_skip_repeats():
    got = task.distinct_problems("train", 60, seed=2)
    stream = take("train", 2, 5000)
    first_seen: list[str] = []
    for p in stream:
        if p.prompt not in first_seen:
            first_seen.append(p.prompt)
    assert [p.prompt for p in got] == first_seen[:60]
    assert task.distinct_problems("train", 0) == []
