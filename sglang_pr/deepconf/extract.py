"""Pluggable answer extraction: the shipped task's ``#### n``, the last number, ``\\boxed{}``,
or a user regex (group 1, else the whole match). Every extractor returns a normalised string
(so answers compare and vote as strings) or None when the trace gave no answer.

A user regex runs in the server's event loop on text the model wrote, so a catastrophic pattern
(``(a|aa)+$``: exponential backtracking) must not freeze the server. It runs under the
third-party ``regex`` engine (re-compatible, installed with transformers), which can time out:
a match over :data:`REGEX_TIMEOUT_S` counts as no answer, and so does every later trace of that
extractor (one group's), so a group stalls the loop once at most.
"""

from __future__ import annotations

import logging
import re
from functools import lru_cache
from typing import Callable, Optional

import regex as timed_re

from sglang_pr.model.task import extract_answer as _task_answer

logger = logging.getLogger(__name__)
# Longest a user pattern may run on one trace (ordinary patterns take microseconds).
REGEX_TIMEOUT_S = 0.05

Extract = Callable[[str], Optional[str]]

_NUMBER_RE = re.compile(r"-?\d+(?:\.\d+)?")


def task_answer(text: str) -> Optional[str]:
    """The shipped arithmetic task's format (last ``#### <int>``)."""
    ans = _task_answer(text)
    return None if ans is None else str(ans)


def last_number(text: str) -> Optional[str]:
    found = _NUMBER_RE.findall(text)
    if not found:
        return None
    num = found[-1]
    # "12.0" and "12" are the same answer; keep other decimals as written
    return num[:-2] if num.endswith(".0") else num


def boxed(text: str) -> Optional[str]:
    """Content of the last ``\\boxed{...}``, braces balanced (``\\boxed{\\frac{1}{2}}``)."""
    start = text.rfind("\\boxed")
    if start < 0:
        return None
    i = text.find("{", start)
    if i < 0:
        return None
    depth, out = 0, []
    for ch in text[i:]:
        if ch == "{":
            depth += 1
            if depth == 1:
                continue
        elif ch == "}":
            depth -= 1
            if depth == 0:
                ans = "".join(out).strip()
                return ans or None
        out.append(ch)
    return None  # unbalanced: the trace was cut before closing the box


@lru_cache(maxsize=64)
def _compiled(pattern: str):
    return timed_re.compile(pattern)


def regex(pattern: str) -> Extract:
    """Extractor returning group 1 (or the whole match) of the last match of ``pattern``."""
    compiled = _compiled(pattern)
    timed_out = False

    def _extract(text: str) -> Optional[str]:
        nonlocal timed_out
        if timed_out:
            return None
        try:
            matches = list(compiled.finditer(text, timeout=REGEX_TIMEOUT_S))
        except TimeoutError:
            timed_out = True
            logger.warning("answer_regex %r took over %s s on a trace: no answers from it",
                           pattern, REGEX_TIMEOUT_S)
            return None
        if not matches:
            return None
        m = matches[-1]
        ans = m.group(1) if compiled.groups else m.group(0)
        return ans.strip() if ans is not None else None

    return _extract


EXTRACTORS: dict[str, Extract] = {"task": task_answer, "last_number": last_number, "boxed": boxed}


def get_extractor(name: str, pattern: Optional[str] = None) -> Extract:
    """An extractor by name (``"regex"`` needs ``pattern``)."""
    if name == "regex":
        if not pattern:
            raise ValueError("extractor 'regex' needs a pattern")
        return regex(pattern)
    try:
        return EXTRACTORS[name]
    except KeyError:
        raise ValueError(f"unknown extractor {name!r}; known: regex, {', '.join(EXTRACTORS)}") from None
