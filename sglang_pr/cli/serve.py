"""``sglang-pr serve``: SGLang's own server with the plugin loaded.

Every SGLang flag passes through unchanged. Defaults are added, never overriding a flag the
user gave: ``--model-path`` is the shipped tiny model when omitted; on a machine without a GPU
the CPU settings of ``sglang_pr.runtime_defaults`` are filled in, and the ``cascade`` attention
backend is chosen (rule: ``sglang_pr.cascade.policy``) unless the user picked a backend or a
speculative algorithm.
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
from pathlib import Path

from sglang_pr.cascade.policy import cascade_server_flags, should_use_cascade
from sglang_pr.cli import CliError
from sglang_pr.cpu_platform import has_accelerator
from sglang_pr.model import SHIPPED_MODEL_DIR
from sglang_pr.plugin import plugin_enabled
from sglang_pr.runtime_defaults import (
    CPU_SERVER_FLAGS,
    add_unset_flags,
    cpu_dtype_for,
    cpu_torch_threads,
    has_flag,
)

SGLANG_DEFAULT_HOST, SGLANG_DEFAULT_PORT = "127.0.0.1", 30000


def add_parser(sub) -> None:
    p = sub.add_parser(
        "serve",
        add_help=False,
        help="launch SGLang's server with sglang_pr (all SGLang flags pass through)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.set_defaults(func=run, accepts_extra=True)


def flag_value(argv: list[str], flag: str) -> str | None:
    """Value of ``--flag v`` or ``--flag=v`` (last one wins, as in argparse); None if absent."""
    value = None
    for i, arg in enumerate(argv):
        if arg == flag:
            if i + 1 >= len(argv) or argv[i + 1].startswith("--"):
                raise CliError(f"{flag} needs a value")
            value = argv[i + 1]
        elif arg.startswith(flag + "="):
            value = arg.split("=", 1)[1]
    return value


def build_server_argv(argv: list[str], gpu: bool | None = None) -> list[str]:
    """The SGLang argv ``sglang-pr serve`` runs: the user's flags plus the defaults they omitted."""
    gpu = has_accelerator() if gpu is None else gpu
    out = list(argv)
    model_path = flag_value(out, "--model-path")
    if model_path is None:
        model_path = str(SHIPPED_MODEL_DIR)
        out += ["--model-path", model_path]
    check_model_path(model_path)
    if plugin_enabled() and should_use_cascade(out, has_accelerator=gpu):
        out += cascade_server_flags(gpu)
    if gpu:
        return out
    out = add_unset_flags(out, CPU_SERVER_FLAGS)
    if not has_flag(out, "--dtype"):
        out += ["--dtype", cpu_dtype_for(model_path)]
    return out


def check_model_path(model_path: str) -> None:
    """A local path must exist; only an ``org/name`` hub id is left for SGLang to resolve."""
    path = Path(model_path).expanduser()
    if path.exists():
        if path.is_dir() and not (path / "config.json").is_file():
            raise CliError(f"--model-path {model_path}: no config.json in that directory")
        return
    hub_id = model_path.count("/") == 1 and not model_path.startswith(("/", ".", "~"))
    if not hub_id:
        raise CliError(f"--model-path {model_path}: no such file or directory")


def check_port_free(argv: list[str]) -> None:
    host = flag_value(argv, "--host") or SGLANG_DEFAULT_HOST
    port_text = flag_value(argv, "--port") or str(SGLANG_DEFAULT_PORT)
    try:
        port = int(port_text)
    except ValueError:
        raise CliError(f"--port {port_text}: not an integer") from None
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        # Bind as uvicorn will (SO_REUSEADDR): a port whose old connections sit in TIME_WAIT is
        # free for SGLang, a port with a listener is not.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as e:
            raise CliError(f"--port {port}: already in use on {host} ({e.strerror})") from None


def validate_with_sglang(argv: list[str]) -> None:
    """Parse with SGLang's own argument parser, so a bad flag (e.g. --dtype) is named here."""
    from sglang.srt.server_args import ServerArgs

    parser = argparse.ArgumentParser(prog="sglang-pr serve")
    ServerArgs.add_cli_args(parser)
    try:
        parser.parse_args(argv)
    except SystemExit as e:  # argparse already printed "argument --dtype: invalid choice ..."
        raise CliError("invalid SGLang flag (see the message above)") from e


def print_help() -> None:
    from sglang.srt.server_args import ServerArgs

    print(__doc__)
    parser = argparse.ArgumentParser(prog="sglang-pr serve", add_help=False)
    ServerArgs.add_cli_args(parser)
    parser.print_help()


def run(args: argparse.Namespace, extra: list[str]) -> int:
    from sglang.srt.plugins import load_plugins

    # Plugins first: they add choices (e.g. --attention-backend cascade) that the flag check
    # and --help must see. SGLang guards load_plugins() against a second call in this process.
    load_plugins()
    if "-h" in extra or "--help" in extra:
        print_help()
        return 0
    argv = build_server_argv(extra)
    validate_with_sglang(argv)
    check_port_free(argv)
    if not has_accelerator():
        # Read when the scheduler subprocess starts its OpenMP runtime; the user's value wins.
        os.environ.setdefault("OMP_NUM_THREADS", str(cpu_torch_threads()))
    print("sglang-pr serve: sglang.launch_server " + " ".join(argv), file=sys.stderr, flush=True)
    # Same steps as `python -m sglang.launch_server`, in this process.
    from sglang.launch_server import run_server
    from sglang.srt.server_args import prepare_server_args
    from sglang.srt.utils import kill_process_tree

    try:
        server_args = prepare_server_args(argv)
        # run_server resolves the arguments first thing; doing it here turns a bad combination
        # (SGLang's checks, or a plugin's, e.g. Medusa heads that don't fit the model) into a
        # one-line error instead of a stack. resolve_once() is a no-op the second time. gRPC
        # mode seeds a field before resolving (launch_server.run_server), so leave it be.
        if not (getattr(server_args, "grpc_mode", False) or getattr(server_args, "smg_grpc_mode", False)):
            server_args.resolve_once()
    except ValueError as e:
        raise CliError(str(e)) from None
    try:
        run_server(server_args)
    finally:
        kill_process_tree(os.getpid(), include_parent=False)
    return 0
