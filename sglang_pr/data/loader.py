"""Question files: JSONL, one ``{"question": ..., "answer": ...}`` object a line.

Other keys on a line are kept (``extra``). Blank lines are skipped. Any bad line is one
:class:`DatasetError` naming the file and line, so a command can print it and exit 2.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path


class DatasetError(ValueError):
    """A bad dataset file; ``str()`` is ``"<file>:<line>: <what is wrong>"``."""


@dataclass(frozen=True)
class Question:
    """``answer`` is a string, as extractors return them (``"42"``, never ``42`` or ``42.0``)."""

    question: str
    answer: str
    extra: dict = field(default_factory=dict, compare=False)


def answer_text(value) -> str | None:
    """A JSON answer as the string an extractor would give; None for a value that is no
    answer (null, a boolean, an object, an empty string)."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)  # 12.0 and 12 are the same answer (as extract.last_number says)
    if isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, str) and value.strip():
        return value.strip()
    return None


def parse_line(text: str, where: str) -> Question:
    """One line's question; ``where`` (``"file:line"``) starts every error message."""
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as e:
        raise DatasetError(f"{where}: not JSON ({e.msg} at column {e.colno})") from None
    if not isinstance(obj, dict):
        raise DatasetError(f"{where}: not a JSON object")
    for key in ("question", "answer"):
        if key not in obj:
            raise DatasetError(f"{where}: no {key!r} field")
    question = obj.pop("question")
    if not isinstance(question, str) or not question.strip():
        raise DatasetError(f"{where}: 'question' is not a non-empty string")
    answer = answer_text(obj.pop("answer"))
    if answer is None:
        raise DatasetError(f"{where}: 'answer' is not a number or a non-empty string")
    return Question(question, answer, obj)


def load_dataset(path: str | os.PathLike) -> list[Question]:
    """Every question in the JSONL file ``path``, in file order."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise DatasetError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise DatasetError(f"{path}: cannot read it ({e})") from None
    out = [parse_line(text, f"{path}:{n}") for n, text in enumerate(lines, 1) if text.strip()]
    if not out:
        raise DatasetError(f"{path}: no questions in it")
    return out
