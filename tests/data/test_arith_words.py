"""The plain-language arithmetic set: exact answers, deterministic, disjoint splits, shipped."""

from __future__ import annotations

import re

import pytest

from sglang_pr.data import ARITH_WORDS_DEV, ARITH_WORDS_HELDOUT, load_dataset
from sglang_pr.data.arith_words import KINDS, generate, is_heldout, main, to_jsonl

# Each kind's answer from the numbers in its text, written independently of the generator.
ANSWER_FROM_NUMBERS = {
    "buy_more": lambda a, b: a + b,
    "give_away": lambda a, b: a - b,
    "times_table": lambda a, b: a * b,
    "one_digit_sum": lambda a, b: a + b,
    "two_digit_sum": lambda a, b: a + b,
    "two_digit_difference": lambda a, b: a - b,
    "groups_of": lambda a, b: a * b,
    "two_step": lambda a, b, c: a + b - c,
}


def _numbers(question: str) -> list[int]:
    return [int(x) for x in re.findall(r"\d+", question)]


def test_same_seed_same_questions_other_seed_others():
    assert generate(seed=3, dev_size=50, heldout_size=30) == generate(seed=3, dev_size=50, heldout_size=30)
    assert generate(seed=3, dev_size=50, heldout_size=30) != generate(seed=4, dev_size=50, heldout_size=30)


def test_shipped_files_are_what_the_script_writes(tmp_path):
    assert main(["--check"]) == 0
    (tmp_path / ARITH_WORDS_DEV.name).write_text("changed\n")
    (tmp_path / ARITH_WORDS_HELDOUT.name).write_text(ARITH_WORDS_HELDOUT.read_text())
    assert main(["--check", "--out", str(tmp_path)]) == 1


def test_shipped_splits_are_big_disjoint_and_split_by_hash():
    dev, heldout = load_dataset(ARITH_WORDS_DEV), load_dataset(ARITH_WORDS_HELDOUT)
    assert len(dev) >= 500 and len(heldout) >= 300
    dev_q, held_q = [q.question for q in dev], [q.question for q in heldout]
    assert len(set(dev_q)) == len(dev_q) and len(set(held_q)) == len(held_q)
    assert not set(dev_q) & set(held_q)
    assert not any(is_heldout(q) for q in dev_q) and all(is_heldout(q) for q in held_q)


def test_every_kind_is_in_both_splits():
    for path in (ARITH_WORDS_DEV, ARITH_WORDS_HELDOUT):
        assert {q.extra["kind"] for q in load_dataset(path)} == set(KINDS)


@pytest.mark.parametrize("path", [ARITH_WORDS_DEV, ARITH_WORDS_HELDOUT], ids=["dev", "heldout"])
def test_answers_are_exact(path):
    for q in load_dataset(path):
        expected = ANSWER_FROM_NUMBERS[q.extra["kind"]](*_numbers(q.question))
        assert q.answer == str(expected) and expected >= 0, q.question


def test_a_question_never_changes_split_with_the_sizes():
    small_dev, small_held = generate(seed=0, dev_size=40, heldout_size=25)
    big_dev, big_held = generate(seed=0, dev_size=80, heldout_size=50)
    assert small_dev == big_dev[:40] and small_held == big_held[:25]


def test_jsonl_rows_are_one_object_a_line():
    dev, _ = generate(seed=0, dev_size=5, heldout_size=1)
    text = to_jsonl(dev)
    assert text.count("\n") == 5 and text.startswith('{"question": ')
