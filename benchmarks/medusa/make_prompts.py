"""Chat prompts for Medusa self-distillation on a real chat model (SmolLM2-135M-Instruct).

    python benchmarks/medusa/make_prompts.py        # writes the two files below

Two disjoint JSONL files of ``{"prompt": ...}`` lines (one user message each; ``sglang-pr
medusa train --prompts`` applies the model's chat template):

* ``sglang_pr/assets/smollm2-135m-medusa/train_prompts.jsonl``: heads train on the model's
  greedy answers to these;
* ``sglang_pr/assets/smollm2-135m-medusa/eval_prompts.jsonl``: held out; the tree is
  calibrated on them and the benchmark measures on them.

Half plain-language arithmetic (the project's dataset, ``arith_words_dev.jsonl``: eval takes
its last questions, train all the others), half short everyday requests built here from
templates x topics (seeded shuffle; each (template, topic) pair lands in one file only).

The eval file is the first round's, unchanged. Training prompts grew from 440 to 1,756 (every
remaining question, the unused first-round pairs, and the pairs of the extra templates and
topics); ``medusa train`` without --heldout-prompts holds the last 24 back to size the tree, so
the benchmark's prompts stay out of all fitting. Four times the data did not lift plain heads
(head 1 top-1 0.52 either way); root-token heads reach 0.63 on it (README, team notes).
"""

from __future__ import annotations

import json
import random
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DATASET = ROOT / "sglang_pr" / "assets" / "datasets" / "arith_words_dev.jsonl"
OUT = ROOT / "sglang_pr" / "assets" / "smollm2-135m-medusa"
SEED = 0
N_EVAL_ARITH = 12
N_TRAIN_CHAT, N_EVAL_CHAT = 240, 12  # the first round's split of the first-round pairs

TEMPLATES = (
    "Explain {t} in two sentences.",
    "What is {t}?",
    "Give me three facts about {t}.",
    "Write a short poem about {t}.",
    "Why is {t} important?",
    "Describe {t} to a child.",
    "List two advantages of {t}.",
    "Write one sentence about {t}.",
)
TOPICS = (
    "the sun", "rain", "photosynthesis", "the moon", "volcanoes", "honey bees", "the ocean",
    "friendship", "exercise", "sleep", "coffee", "the internet", "electricity", "gravity",
    "music", "reading books", "recycling", "trees", "the water cycle", "dinosaurs",
    "computers", "bicycles", "cats", "dogs", "mountains", "winter", "the Roman Empire",
    "vaccines", "chess", "gardening", "clouds", "the human heart", "airplanes", "money",
    "teamwork", "the brain", "rivers", "birds", "the alphabet", "soap",
)


TEMPLATES_EXTRA = (
    "Summarise what you know about {t}.",
    "How does {t} work?",
    "Tell me a fun fact about {t}.",
    "What are the main parts of {t}?",
    "Compare {t} with something similar.",
    "Write a short story about {t}.",
    "What would happen without {t}?",
    "Give me a tip related to {t}.",
)
TOPICS_EXTRA = (
    "the stars", "snow", "bread", "the desert", "whales", "penguins", "the rainforest", "kindness",
    "swimming", "breakfast", "tea", "smartphones", "magnets", "light", "painting", "libraries",
    "plastic", "flowers", "the weather", "fossils", "robots", "trains", "horses", "butterflies",
    "islands", "summer", "ancient Egypt", "antibiotics", "football", "cooking", "rainbows",
    "the lungs", "rockets", "saving money", "leadership", "memory", "lakes", "owls", "numbers",
    "toothpaste",
)


def chat_prompts(rng: random.Random) -> list[str]:
    pairs = [tpl.format(t=topic) for tpl in TEMPLATES for topic in TOPICS]
    rng.shuffle(pairs)
    return pairs


def extra_chat_prompts(rng: random.Random) -> list[str]:
    """Pairs with an extra template or topic: none can be an eval prompt."""
    pairs = [tpl.format(t=topic) for tpl in TEMPLATES + TEMPLATES_EXTRA
             for topic in TOPICS + TOPICS_EXTRA
             if tpl in TEMPLATES_EXTRA or topic in TOPICS_EXTRA]
    rng.shuffle(pairs)
    return pairs


def main() -> None:
    rng = random.Random(SEED)
    questions = [json.loads(line)["question"] for line in DATASET.read_text().splitlines()
                 if line.strip()]
    chat = chat_prompts(rng)
    first_round = questions[:200] + chat[:N_TRAIN_CHAT]
    evals = questions[-N_EVAL_ARITH:] + chat[N_TRAIN_CHAT : N_TRAIN_CHAT + N_EVAL_CHAT]
    rng.shuffle(first_round)  # (drawn as in the first round, so evals come out unchanged)
    rng.shuffle(evals)
    more = (questions[200:-N_EVAL_ARITH] + chat[N_TRAIN_CHAT + N_EVAL_CHAT :]
            + extra_chat_prompts(rng))
    rng.shuffle(more)
    train = first_round + more
    assert not set(train) & set(evals)
    OUT.mkdir(parents=True, exist_ok=True)
    for name, rows in (("train_prompts.jsonl", train), ("eval_prompts.jsonl", evals)):
        (OUT / name).write_text("".join(json.dumps({"prompt": p}) + "\n" for p in rows))
        print(f"wrote {OUT / name}: {len(rows)} prompts")


if __name__ == "__main__":
    main()
