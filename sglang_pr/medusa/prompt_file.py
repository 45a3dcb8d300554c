"""Chat prompts for ``sglang-pr medusa train --prompts FILE.jsonl``.

One JSON object a line with the user message under ``"prompt"`` (or ``"question"``, so the
project's datasets, ``{"question": ..., "answer": ...}``, serve as they are); blank lines are
skipped. Anything else is a ``PromptFileError`` naming the file and line.
"""

from __future__ import annotations

import json
from pathlib import Path

KEYS = ("prompt", "question")


class PromptFileError(ValueError):
    """A prompts file that is not JSONL of prompts; one line naming the file and line."""


def read_prompt_file(path: str | Path) -> list[str]:
    """The user messages of ``path``, in file order."""
    p = Path(path)
    try:
        lines = p.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise PromptFileError(f"{p}: cannot read ({e.__class__.__name__})") from None
    out = []
    for i, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError:
            raise PromptFileError(f"{p}:{i}: not a JSON object (the file must be JSONL)") from None
        text = next((row[k] for k in KEYS if isinstance(row, dict) and k in row), None)
        if not isinstance(text, str) or not text.strip():
            raise PromptFileError(f"{p}:{i}: needs a non-empty string under 'prompt' or "
                                  f"'question'")
        out.append(text)
    if not out:
        raise PromptFileError(f"{p}: no prompts")
    return out
