"""Prompts files for ``medusa train --prompts``: JSONL, errors naming the file and line."""

import json

import pytest

from sglang_pr.medusa.prompt_file import PromptFileError, read_prompt_file


def test_prompt_and_question_lines_blank_lines_skipped(tmp_path):
    f = tmp_path / "p.jsonl"
    f.write_text(json.dumps({"prompt": "Hi?"}) + "\n\n"
                 + json.dumps({"question": "2+2?", "answer": 4}) + "\n")
    assert read_prompt_file(f) == ["Hi?", "2+2?"]


@pytest.mark.parametrize("text,needle", [
    ('{"prompt": "a"}\nnot json\n', ":2: not a JSON object"),
    ('{"prompt": "a"}\n["a list"]\n', ":2: needs a non-empty string"),
    ('{"text": "a"}\n', ":1: needs a non-empty string"),
    ('{"prompt": ""}\n', ":1: needs a non-empty string"),
    ("\n\n", "no prompts"),
])
def test_bad_files_are_named_with_the_line(tmp_path, text, needle):
    f = tmp_path / "p.jsonl"
    f.write_text(text)
    with pytest.raises(PromptFileError, match=needle) as e:
        read_prompt_file(f)
    assert str(f) in str(e.value) and "\n" not in str(e.value)


def test_missing_file(tmp_path):
    with pytest.raises(PromptFileError, match="cannot read"):
        read_prompt_file(tmp_path / "nope.jsonl")
