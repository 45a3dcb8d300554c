"""Pluggable answer extraction."""

import pytest

from sglang_pr.deepconf.extract import boxed, get_extractor, last_number, task_answer
from sglang_pr.model.task import Problem


def test_task_format():
    p = Problem(17, (("*", 6), ("+", 9)))
    assert task_answer(p.completion) == str(p.answer) == "11"
    assert task_answer("17*6=102>2\n2+9=11") is None


def test_last_number():
    assert last_number("a 3 b -12.5 c 7.0") == "7"
    assert last_number("x = -4") == "-4"
    assert last_number("none") is None


def test_boxed_nested_and_unclosed():
    assert boxed(r"so \boxed{1} then \boxed{\frac{1}{2}}") == r"\frac{1}{2}"
    assert boxed(r"\boxed{12") is None
    assert boxed("no box") is None


def test_regex_group_and_whole_match():
    ex = get_extractor("regex", r"answer: (\w+)")
    assert ex("answer: foo ... answer: bar") == "bar"
    assert get_extractor("regex", r"\d+")("a1b22") == "22"
    assert ex("nothing") is None


def test_unknown_and_missing_pattern():
    with pytest.raises(ValueError, match="unknown extractor"):
        get_extractor("nope")
    with pytest.raises(ValueError, match="pattern"):
        get_extractor("regex")


def test_a_catastrophic_pattern_times_out_as_no_answer():
    """(a|aa)+$ backtracks exponentially on a's ending in b: Python's re would hang the server's
    event loop for hours on a 40-character trace."""
    import time

    from sglang_pr.deepconf.extract import REGEX_TIMEOUT_S

    ex = get_extractor("regex", r"(a|aa)+$")
    start = time.monotonic()
    assert ex("a" * 40 + "b") is None
    assert ex("aaa") is None  # once timed out, the group's extractor gives no more answers
    assert time.monotonic() - start < 20 * REGEX_TIMEOUT_S
    fresh = get_extractor("regex", r"(a|aa)+$")  # another group's extractor starts afresh
    assert fresh("aaa") == "a"
