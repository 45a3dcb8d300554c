"""benchmarks/smollm2_dataset_check.py: bad input is one line and exit 2, before any server."""

from __future__ import annotations


import pytest



@pytest.fixture(scope="module")
def check(benchmark_module):
    return benchmark_module("smollm2_dataset_check.py", "smollm2_dataset_check_under_test")


def _error_line(check, monkeypatch, capsys, *argv) -> str:
    def no_server(*a, **k):
        raise AssertionError("a server was started for bad input")

    monkeypatch.setattr(check, "launch", no_server)
    assert check.main(list(argv)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    return err[0]


def test_unknown_model_name_lists_the_known_ones(check, monkeypatch, capsys, tmp_path):
    line = _error_line(check, monkeypatch, capsys, "--model-path", "smollm9",
                       "--out", str(tmp_path / "o.json"))
    assert line.endswith("known: tiny-reasoner, smollm2-135m")
    assert not (tmp_path / "o.json").exists()


def test_dataset_line_without_question_names_file_and_line(check, monkeypatch, capsys,
                                                          tmp_path):
    model = tmp_path / "m"
    model.mkdir()
    (model / "config.json").write_text("{}")
    (model / "tokenizer.json").write_text("{}")
    data = tmp_path / "d.jsonl"
    data.write_text('{"answer": 3}\n')
    line = _error_line(check, monkeypatch, capsys, "--model-path", str(model), "--dataset",
                       str(data), "--out", str(tmp_path / "o.json"))
    assert line == f"smollm2_dataset_check: error: {data}:1: no 'question' field"
