"""Arithmetic questions in plain language, with exact integer answers.

    python -m sglang_pr.data.arith_words            # rewrites sglang_pr/assets/datasets/
    python -m sglang_pr.data.arith_words --check    # exit 1 unless the shipped files match

Made for real chat models that only partly solve them (SmolLM2-135M-Instruct: see
``benchmarks/smollm2_dataset_check.py``): stories ("Tom has 7 apples and buys 5 more. ..."),
times tables, one- and two-digit sums, two-digit differences, and two-step stories. Deterministic from the
seed. Each question goes to the dev (tuning) split or the held-out split by a hash of its
text, so the splits are disjoint whatever the seed or sizes, and a question never moves.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import sys
from pathlib import Path
from typing import Callable

from sglang_pr.data import DATASETS_DIR, DEV_FILE, HELDOUT_FILE

SEED, DEV_SIZE, HELDOUT_SIZE = 0, 500, 300
HELDOUT_PERCENT = 40  # share of the question space that goes to held-out

PEOPLE = (("Tom", "he"), ("Anna", "she"), ("Sam", "he"), ("Lily", "she"), ("Ben", "he"),
          ("Mia", "she"), ("Jack", "he"), ("Emma", "she"), ("Leo", "he"), ("Zoe", "she"))
THINGS = ("apples", "pencils", "marbles", "stickers", "cookies", "books", "cards", "stamps",
          "balloons", "shells")
CONTAINERS = (("bags", "bag"), ("boxes", "box"), ("baskets", "basket"))

Gen = Callable[[random.Random], tuple[str, int]]


def _person(rng: random.Random) -> tuple[str, str]:
    return rng.choice(PEOPLE)


# Number ranges are small on purpose: SmolLM2-135M gets one-digit story sums right about one
# time in five and 20-50-sized sums one in six, subtractions almost never (probe of 6 questions
# x 16 samples per kind, temperature 0.7). The weights below (KINDS) keep the mix where it
# partly solves them and voting helps (pass@1 0.2-0.6, majority@16 at least 0.1 higher).

def buy_more(rng: random.Random) -> tuple[str, int]:
    (name, he), thing = _person(rng), rng.choice(THINGS)
    a, b = rng.randint(2, 9), rng.randint(2, 9)
    return (f"{name} has {a} {thing} and buys {b} more. How many {thing} does {he} have now?",
            a + b)


def give_away(rng: random.Random) -> tuple[str, int]:
    (name, he), thing = _person(rng), rng.choice(THINGS)
    a = rng.randint(6, 15)
    b = rng.randint(1, a - 1)
    return (f"{name} has {a} {thing} and gives {b} to a friend. How many {thing} does {he} "
            f"have left?", a - b)


def times_table(rng: random.Random) -> tuple[str, int]:
    a, b = rng.randint(2, 10), rng.randint(2, 10)
    form = rng.choice(("What is {a} times {b}?", "How much is {a} times {b}?",
                       "What is {a} multiplied by {b}?"))
    return form.format(a=a, b=b), a * b


def one_digit_sum(rng: random.Random) -> tuple[str, int]:
    a, b = rng.randint(2, 9), rng.randint(2, 9)
    form = rng.choice(("What is {a} plus {b}?", "How much is {a} plus {b}?",
                       "What do you get when you add {a} and {b}?"))
    return form.format(a=a, b=b), a + b


def groups_of(rng: random.Random) -> tuple[str, int]:
    thing, (boxes, box) = rng.choice(THINGS), rng.choice(CONTAINERS)
    a, b = rng.randint(2, 6), rng.randint(2, 6)
    return (f"There are {a} {boxes} with {b} {thing} in each {box}. How many {thing} are there "
            f"in total?", a * b)


def two_digit_sum(rng: random.Random) -> tuple[str, int]:
    a, b = rng.randint(10, 50), rng.randint(10, 50)
    form = rng.choice(("What is {a} plus {b}?", "What is the sum of {a} and {b}?"))
    return form.format(a=a, b=b), a + b


def two_digit_difference(rng: random.Random) -> tuple[str, int]:
    a = rng.randint(20, 60)
    b = rng.randint(10, a - 1)
    form = rng.choice(("What is {a} minus {b}?", "What is {a} take away {b}?"))
    return form.format(a=a, b=b), a - b


def two_step(rng: random.Random) -> tuple[str, int]:
    (name, he), thing = _person(rng), rng.choice(THINGS)
    a, b = rng.randint(2, 9), rng.randint(2, 9)
    c = rng.randint(1, a + b - 1)
    return (f"{name} has {a} {thing}. {he.capitalize()} buys {b} more and then gives away {c}. "
            f"How many {thing} does {he} have now?", a + b - c)


# The question mix (kind -> (generator, weight)): the knob that sets the difficulty.
KINDS: dict[str, tuple[Gen, int]] = {
    "buy_more": (buy_more, 3),
    "give_away": (give_away, 3),
    "times_table": (times_table, 3),
    "one_digit_sum": (one_digit_sum, 3),
    "groups_of": (groups_of, 3),
    "two_digit_sum": (two_digit_sum, 1),
    "two_digit_difference": (two_digit_difference, 1),
    "two_step": (two_step, 1),
}


def is_heldout(question: str) -> bool:
    """The split of a question, from its text alone."""
    digest = hashlib.sha256(question.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % 100 < HELDOUT_PERCENT


def generate(seed: int = SEED, dev_size: int = DEV_SIZE,
             heldout_size: int = HELDOUT_SIZE) -> tuple[list[dict], list[dict]]:
    """(dev, held-out) rows ``{"question", "answer", "kind"}``: distinct questions, drawn
    with ``KINDS``' weights until both splits are full."""
    rng = random.Random(seed)
    names, weights = list(KINDS), [w for _, w in KINDS.values()]
    seen: set[str] = set()
    dev: list[dict] = []
    heldout: list[dict] = []
    for _ in range(100 * (dev_size + heldout_size)):  # bounded: the space is ~10^5 questions
        kind = rng.choices(names, weights)[0]
        question, answer = KINDS[kind][0](rng)
        if question in seen:
            continue
        seen.add(question)
        split, size = (heldout, heldout_size) if is_heldout(question) else (dev, dev_size)
        if len(split) < size:
            split.append({"question": question, "answer": answer, "kind": kind})
        if len(dev) >= dev_size and len(heldout) >= heldout_size:
            break
    else:
        raise RuntimeError("the question space is too small for the requested sizes")
    overlap = {r["question"] for r in dev} & {r["question"] for r in heldout}
    assert not overlap, f"splits overlap: {sorted(overlap)[:3]}"
    return dev, heldout


def to_jsonl(rows: list[dict]) -> str:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m sglang_pr.data.arith_words",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--seed", type=int, default=SEED)
    p.add_argument("--dev-size", type=int, default=DEV_SIZE)
    p.add_argument("--heldout-size", type=int, default=HELDOUT_SIZE)
    p.add_argument("--out", type=Path, default=DATASETS_DIR, help="folder for the two files")
    p.add_argument("--check", action="store_true",
                   help="write nothing; exit 1 unless the files in --out are what would be written")
    args = p.parse_args(argv)
    dev, heldout = generate(args.seed, args.dev_size, args.heldout_size)
    files = {args.out / DEV_FILE: to_jsonl(dev), args.out / HELDOUT_FILE: to_jsonl(heldout)}
    if args.check:
        stale = [str(f) for f, text in files.items()
                 if not f.is_file() or f.read_text(encoding="utf-8") != text]
        for f in stale:
            print(f"{f}: differs from what the generator writes", file=sys.stderr)
        return 1 if stale else 0
    args.out.mkdir(parents=True, exist_ok=True)
    for f, text in files.items():
        f.write_text(text, encoding="utf-8")
        print(f"{f}: {text.count(chr(10))} questions")
    return 0


if __name__ == "__main__":
    sys.exit(main())
