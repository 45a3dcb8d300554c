"""The shipped model's task: multi-step modular arithmetic, answered by a chain of steps.

A question is a start value and 2..8 labelled operations; the model writes one line per
operation, then the answer in a fixed format. Worked example
(``Problem(17, (("*", 6), ("+", 9)))``)::

    prompt:      "Q: 17 a*6 b+9\\nA:\\n"
    completion:  "a:17*6=102>2\\nb:2+9=11\\n#### 11"

Values live in 0..99: a result outside that range is written, then reduced (``102>2``), so the
modular step is visible to the model. Difficulty grows with the number of steps, so per-question
accuracy varies, which self-consistency, confidence filtering and drafting all need.

Why labels: step k must apply the k-th operation. Unlabelled, a tiny model has to count
operations in the prompt, learns that slowly and then skips or repeats steps; with a label it
is a content lookup ("b" -> "+9") that it learns early, so the model's remaining errors are
arithmetic slips that vary between samples (what majority voting can fix). Label, left operand
(the previous result), operator and operand are all copies: drafting heads can predict them.

Train and held-out questions are disjoint by construction: a question's split is a hash of its
text, so no generator seed can leak a held-out question into training.
"""

from __future__ import annotations

import hashlib
import random
import re
from dataclasses import dataclass
from typing import Iterator, Literal

MODULUS = 100
MIN_STEPS, MAX_STEPS = 2, 8
OPS = ("+", "-", "*")
ANSWER_PREFIX = "#### "
LABELS = "abcdefgh"  # one per operation, MAX_STEPS of them
HELDOUT_EVERY = 16  # one question in 16 (by hash) belongs to the held-out split
_ANSWER_RE = re.compile(r"####\s*(-?\d+)")

Split = Literal["train", "heldout"]


@dataclass(frozen=True)
class Problem:
    start: int
    ops: tuple[tuple[str, int], ...]

    @property
    def prompt(self) -> str:
        body = " ".join([str(self.start)] + [f"{lab}{op}{d}" for lab, (op, d) in zip(LABELS, self.ops)])
        return f"Q: {body}\nA:\n"

    @property
    def steps(self) -> list[tuple[int, str, int, int, int]]:
        """(lhs, op, operand, raw result, reduced result) for each operation."""
        out, value = [], self.start
        for op, d in self.ops:
            raw = value + d if op == "+" else value - d if op == "-" else value * d
            out.append((value, op, d, raw, raw % MODULUS))
            value = raw % MODULUS
        return out

    @property
    def answer(self) -> int:
        return self.steps[-1][4]

    @property
    def completion(self) -> str:
        lines = []
        for lab, (lhs, op, d, raw, red) in zip(LABELS, self.steps):
            lines.append(f"{lab}:{lhs}{op}{d}={raw}" + (f">{red}" if raw != red else ""))
        return "\n".join(lines) + f"\n{ANSWER_PREFIX}{self.answer}"

    @property
    def split(self) -> Split:
        digest = hashlib.sha1(self.prompt.encode()).digest()
        return "heldout" if digest[0] % HELDOUT_EVERY == 0 else "train"


def random_problem(rng: random.Random, n_steps: int | None = None) -> Problem:
    n = rng.randint(MIN_STEPS, MAX_STEPS) if n_steps is None else n_steps
    if not MIN_STEPS <= n <= MAX_STEPS:
        raise ValueError(f"n_steps must be in [{MIN_STEPS}, {MAX_STEPS}], got {n}")
    ops = tuple((rng.choice(OPS), rng.randint(1, 9)) for _ in range(n))
    return Problem(rng.randint(0, MODULUS - 1), ops)


def problems(split: Split, seed: int) -> Iterator[Problem]:
    """Endless, seeded stream of distinct-split problems (rejection on the hash split)."""
    rng = random.Random(f"{split}:{seed}")
    while True:
        p = random_problem(rng)
        if p.split == split:
            yield p


def distinct_problems(split: Split, n: int, seed: int = 0) -> list[Problem]:
    """The first ``n`` problems of a split and seed with distinct prompts, in stream order."""
    seen: dict[str, Problem] = {}
    if n <= 0:
        return []
    for p in problems(split, seed):
        seen.setdefault(p.prompt, p)
        if len(seen) == n:
            return list(seen.values())
    raise AssertionError("unreachable: the problem stream is endless")


def heldout_set(n: int, seed: int = 0) -> list[Problem]:
    """The first ``n`` distinct held-out problems of a seed: the evaluation set."""
    return distinct_problems("heldout", n, seed)


def extract_answer(text: str) -> int | None:
    """The last ``#### <int>`` in a completion, or None when the trace never answered."""
    found = _ANSWER_RE.findall(text)
    return int(found[-1]) if found else None


def is_correct(text: str, problem: Problem) -> bool:
    return extract_answer(text) == problem.answer


def parse_prompt(prompt: str) -> Problem:
    """Inverse of ``Problem.prompt`` (used to score traces that only carry their prompt)."""
    m = re.fullmatch(r"Q: (\d+)((?: [a-h][+\-*]\d)+)\nA:\n", prompt)
    if m is None:
        raise ValueError(f"not a task prompt: {prompt!r}")
    toks = m.group(2).split()
    if "".join(t[0] for t in toks) != LABELS[: len(toks)] or not MIN_STEPS <= len(toks) <= MAX_STEPS:
        raise ValueError(f"operations must be labelled a, b, c, ... ({MIN_STEPS}..{MAX_STEPS}): {prompt!r}")
    return Problem(int(m.group(1)), tuple((t[1], int(t[2:])) for t in toks))
