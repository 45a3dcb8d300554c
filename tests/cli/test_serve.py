"""``sglang-pr serve``: flags pass through, defaults fill only the gaps, bad input is named."""

from __future__ import annotations

import socket
import subprocess
import sys

import pytest

from sglang_pr.cli import CliError
from sglang_pr.cli.serve import build_server_argv, check_model_path, check_port_free, flag_value
from sglang_pr.model import SHIPPED_MODEL_DIR
from sglang_pr.runtime_defaults import CPU_SERVER_FLAGS


def test_shipped_model_is_the_default_model_path():
    argv = build_server_argv(["--port", "1234"], gpu=True)
    assert flag_value(argv, "--model-path") == str(SHIPPED_MODEL_DIR)


def test_gpu_machine_gets_no_cpu_defaults():
    user = ["--model-path", str(SHIPPED_MODEL_DIR), "--attention-backend", "fa3"]
    assert build_server_argv(user, gpu=True) == user


def test_no_cascade_when_sglang_plugins_switches_the_plugin_off(monkeypatch):
    monkeypatch.setenv("SGLANG_PLUGINS", "sglang_pr_cpu")
    argv = build_server_argv([], gpu=False)
    assert flag_value(argv, "--attention-backend") == CPU_SERVER_FLAGS["--attention-backend"]


def test_cpu_machine_gets_cascade_unless_user_chose():
    argv = build_server_argv([], gpu=False)
    assert flag_value(argv, "--attention-backend") == "cascade"
    spec = build_server_argv(["--speculative-algorithm", "MEDUSA"], gpu=False)
    assert flag_value(spec, "--attention-backend") == CPU_SERVER_FLAGS["--attention-backend"]


def test_cpu_defaults_fill_gaps_and_user_flags_win():
    user = ["--model-path", str(SHIPPED_MODEL_DIR), "--attention-backend=my_backend",
            "--max-total-tokens", "4096", "--dtype", "bfloat16"]
    argv = build_server_argv(user, gpu=False)
    assert argv[: len(user)] == user  # passed through unchanged, in order
    assert flag_value(argv, "--attention-backend") == "my_backend"
    assert flag_value(argv, "--max-total-tokens") == "4096"
    assert flag_value(argv, "--dtype") == "bfloat16"
    assert flag_value(argv, "--sampling-backend") == CPU_SERVER_FLAGS["--sampling-backend"]
    assert flag_value(argv, "--cuda-graph-backend-decode") == "disabled"
    assert "--sleep-on-idle" in argv


def test_float32_checkpoint_is_served_in_float32_on_cpu():
    argv = build_server_argv([], gpu=False)
    assert flag_value(argv, "--dtype") == "float32"


@pytest.mark.parametrize("path", ["/no/such/model", "./missing", "not-a-hub-id"])
def test_missing_model_path_is_named(path):
    with pytest.raises(CliError, match="--model-path"):
        check_model_path(path)


def test_directory_without_config_is_named(tmp_path):
    with pytest.raises(CliError, match="no config.json"):
        check_model_path(str(tmp_path))


def test_port_in_use_is_named():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        with pytest.raises(CliError, match=f"--port {port}: already in use"):
            check_port_free(["--port", str(port)])


def _serve(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-P", "-m", "sglang_pr.cli", "serve", *args],
                          capture_output=True, text=True, timeout=120)


def test_cli_bad_dtype_exits_2_naming_the_flag():
    res = _serve("--dtype", "float13")
    assert res.returncode == 2
    assert "--dtype" in res.stderr and "float13" in res.stderr


def test_cli_missing_model_path_exits_2_naming_it():
    res = _serve("--model-path", "/no/such/model")
    assert res.returncode == 2
    assert "--model-path /no/such/model: no such file or directory" in res.stderr


def test_cli_port_in_use_exits_2_naming_it():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        res = _serve("--port", str(port))
    assert res.returncode == 2
    assert f"--port {port}: already in use" in res.stderr


def test_help_lists_sglang_flags():
    res = _serve("--help")
    assert res.returncode == 0
    assert "--attention-backend" in res.stdout and "--model-path" in res.stdout


def test_cpu_torch_threads_leave_a_core_for_the_other_processes():
    from sglang_pr.runtime_defaults import cpu_torch_threads

    assert cpu_torch_threads(2) == 1
    assert cpu_torch_threads(1) == 1
    assert cpu_torch_threads(16) == 15
