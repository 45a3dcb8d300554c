"""Chat prompts for Medusa self-distillation on a real chat model (SmolLM2-135M-Instruct).

    python benchmarks/medusa/make_prompts.py        # writes the two files below

Two disjoint JSONL files of ``{"prompt": ...}`` lines (one user message each; ``sglang-pr
medusa train --prompts`` applies the model's chat template):

* ``sglang_pr/assets/smollm2-135m-medusa/train_prompts.jsonl``: heads train on the model's
  greedy answers to these;
* ``sglang_pr/assets/smollm2-135m-medusa/eval_prompts.jsonl``: held out; the tree is
  calibrated on them and the benchmark measures on them.

Half plain-language arithmetic (the project's dataset, ``arith_words_dev.jsonl``: train takes
its first questions, eval its last ones), half short everyday requests built here from
templates x topics (seeded shuffle; each (template, topic) pair lands in one file only).
"""

from __future__ import annotations

import json
import random
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DATASET = ROOT / "sglang_pr" / "assets" / "datasets" / "arith_words_dev.jsonl"
OUT = ROOT / "sglang_pr" / "assets" / "smollm2-135m-medusa"
SEED = 0
N_TRAIN_ARITH, N_EVAL_ARITH = 200, 12
N_TRAIN_CHAT, N_EVAL_CHAT = 240, 12

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


def chat_prompts(rng: random.Random) -> list[str]:
    pairs = [tpl.format(t=topic) for tpl in TEMPLATES for topic in TOPICS]
    rng.shuffle(pairs)
    return pairs


def main() -> None:
    rng = random.Random(SEED)
    questions = [json.loads(line)["question"] for line in DATASET.read_text().splitlines()
                 if line.strip()]
    chat = chat_prompts(rng)
    train = questions[:N_TRAIN_ARITH] + chat[:N_TRAIN_CHAT]
    evals = questions[-N_EVAL_ARITH:] + chat[N_TRAIN_CHAT : N_TRAIN_CHAT + N_EVAL_CHAT]
    rng.shuffle(train)
    rng.shuffle(evals)
    assert not set(train) & set(evals)
    OUT.mkdir(parents=True, exist_ok=True)
    for name, rows in (("train_prompts.jsonl", train), ("eval_prompts.jsonl", evals)):
        (OUT / name).write_text("".join(json.dumps({"prompt": p}) + "\n" for p in rows))
        print(f"wrote {OUT / name}: {len(rows)} prompts")


if __name__ == "__main__":
    main()
