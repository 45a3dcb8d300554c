"""The CPU defaults are declared once and read the same by ``serve``, SGLang's parser and the
CPU platform."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from types import SimpleNamespace

import pytest

from sglang_pr.model import SHIPPED_MODEL_DIR
from sglang_pr.runtime_defaults import (
    CPU_SERVER_DEFAULTS,
    FLAGS_ONLY,
    cpu_dtype_for,
    cpu_server_defaults,
    flags_argv,
)


def test_flags_argv_writes_switches_without_a_value():
    assert flags_argv({"max_total_tokens": 8, "sleep_on_idle": True, "dtype": "float32"}) == \
        ["--max-total-tokens", "8", "--sleep-on-idle", "--dtype", "float32"]


@pytest.mark.parametrize("value", [False, None])
def test_flags_argv_refuses_what_no_flag_can_say(value):
    with pytest.raises(ValueError, match="sleep_on_idle"):
        flags_argv({"sleep_on_idle": value})


def test_sglangs_parser_reads_every_declared_default_back():
    from sglang.srt.server_args import ServerArgs

    parser = argparse.ArgumentParser()
    ServerArgs.add_cli_args(parser)
    declared = cpu_server_defaults(SHIPPED_MODEL_DIR)
    got = vars(parser.parse_args(flags_argv({"model_path": "m", **declared})))
    assert {f: got[f] for f in declared} == declared


def test_dtype_follows_the_checkpoint(tmp_path):
    assert cpu_dtype_for(SHIPPED_MODEL_DIR) == "float32"
    (tmp_path / "config.json").write_text(json.dumps({"torch_dtype": "bfloat16"}))
    assert cpu_dtype_for(tmp_path) == "bfloat16"


def test_platform_fills_only_what_sglang_leaves_unset():
    from sglang_pr.cpu_platform.platform import PortableCpuPlatform

    args = SimpleNamespace(**{f: None for f in CPU_SERVER_DEFAULTS})
    args.sampling_backend = "flashinfer"  # the user's (or SGLang's) choice stands
    args.disable_overlap_schedule = args.sleep_on_idle = False  # off may be the user's choice
    PortableCpuPlatform().apply_server_args_defaults(args)
    assert args.attention_backend == CPU_SERVER_DEFAULTS["attention_backend"]
    assert args.max_total_tokens == CPU_SERVER_DEFAULTS["max_total_tokens"]
    assert args.sampling_backend == "flashinfer"
    assert args.disable_overlap_schedule is False and args.sleep_on_idle is False
    assert all(getattr(args, f) is None for f in FLAGS_ONLY)


# A plain `python -m sglang.launch_server` resolution (no server started), in a subprocess so
# the plugin's hooks stay out of this test process.
_RESOLVE = """
import json, sys
from sglang.srt.plugins import load_plugins
load_plugins()
from sglang.srt.arg_groups.overrides import resolution_result
from sglang.srt.server_args import prepare_server_args
args = prepare_server_args(["--device", "cpu", "--model-path", sys.argv[1]])
args.resolve_once()
print(json.dumps({"platform": [d for s, d in args._resolved_overrides if s == "platform:cpu"],
                  **{f: resolution_result(args, f) for f in sys.argv[2:]}}))
"""


@pytest.mark.heavy  # a subprocess importing SGLang; the platform table's unit tests above twin it
def test_plain_sglang_launch_gets_the_platform_defaults():
    fields = ["attention_backend", "sampling_backend", "max_total_tokens"]
    res = subprocess.run([sys.executable, "-P", "-c", _RESOLVE, str(SHIPPED_MODEL_DIR), *fields],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    got = json.loads(res.stdout.strip().splitlines()[-1])
    assert {f: got[f] for f in fields} == {f: CPU_SERVER_DEFAULTS[f] for f in fields}
    assert got["platform"] == [{"max_total_tokens": CPU_SERVER_DEFAULTS["max_total_tokens"]}]
