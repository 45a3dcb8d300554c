"""Questions as the served model expects them: its chat template when it has one.

One place for it, so the demo, every benchmark and Medusa training format a question the same
way. A model without a chat template (the shipped char-level model) gets the question as is.
"""

from __future__ import annotations

import os
from functools import lru_cache
from typing import Sequence


@lru_cache(maxsize=8)
def load_tokenizer(model_path: str | os.PathLike):
    """The model folder's tokenizer (cached: benchmarks format hundreds of questions)."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(model_path))


def has_chat_template(tokenizer) -> bool:
    return bool(getattr(tokenizer, "chat_template", None))


def format_prompt(tokenizer, question: str) -> str:
    """``question`` as the only user message, ready for the assistant's turn.

    Without a chat template the text is returned unchanged (the shipped model's prompts are
    already in its task format).
    """
    if not has_chat_template(tokenizer):
        return question
    messages = [{"role": "user", "content": question}]
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def format_prompts(model_path: str | os.PathLike, questions: Sequence[str]) -> list[str]:
    """``format_prompt`` for every question, with the tokenizer of ``model_path``."""
    tokenizer = load_tokenizer(str(model_path))
    return [format_prompt(tokenizer, q) for q in questions]
