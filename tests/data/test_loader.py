"""load_dataset: good lines, and one error naming the file and line for a bad one."""

from __future__ import annotations

import pytest

from sglang_pr.data import DatasetError, Question, load_dataset


def write(tmp_path, *lines: str):
    path = tmp_path / "qs.jsonl"
    path.write_text("".join(line + "\n" for line in lines))
    return path


def test_good_file(tmp_path):
    path = write(tmp_path, '{"question": "What is 2 plus 2?", "answer": 4, "kind": "sum"}', "",
                 '{"question": "Half of 1?", "answer": "1/2"}', '{"question": "q", "answer": 12.0}')
    qs = load_dataset(path)
    assert qs == [Question("What is 2 plus 2?", "4"), Question("Half of 1?", "1/2"),
                  Question("q", "12")]
    assert qs[0].extra == {"kind": "sum"}


@pytest.mark.parametrize("bad_line,needle", [
    ("not json", "not JSON"),
    ('{"question": "q"', "not JSON"),
    ('["q", 1]', "not a JSON object"),
    ('{"answer": 1}', "no 'question' field"),
    ('{"question": "q"}', "no 'answer' field"),
    ('{"question": "", "answer": 1}', "'question' is not a non-empty string"),
    ('{"question": "q", "answer": null}', "'answer' is not a number"),
    ('{"question": "q", "answer": true}', "'answer' is not a number"),
])
def test_bad_line_names_file_and_line(tmp_path, bad_line, needle):
    # The blank line still counts: the number is the line an editor shows.
    path = write(tmp_path, '{"question": "q", "answer": 1}', "", bad_line)
    with pytest.raises(DatasetError) as e:
        load_dataset(path)
    msg = str(e.value)
    assert msg.startswith(f"{path}:3: ") and needle in msg and "\n" not in msg


def test_missing_and_empty_files(tmp_path):
    with pytest.raises(DatasetError, match=r"nope\.jsonl: no such file"):
        load_dataset(tmp_path / "nope.jsonl")
    with pytest.raises(DatasetError, match=r"qs\.jsonl: no questions"):
        load_dataset(write(tmp_path, "", "  "))
