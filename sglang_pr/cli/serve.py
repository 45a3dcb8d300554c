"""``sglang-pr serve``: SGLang's own server with the plugin loaded.

Every SGLang flag passes through unchanged: the command line is read with SGLang's own parser
(``ServerArgs.add_cli_args``, defaults suppressed, so exactly the flags you gave are seen; a
``--config`` file counts as given). Defaults are added, never overriding a flag you gave:
``--model-path`` is the shipped tiny model when omitted, and a model name (``sglang-pr
models``: ``smollm2-135m``, materialised on first use) becomes its folder; on a machine without a GPU the CPU
settings of ``sglang_pr.runtime_defaults`` are filled in (``--dtype float32`` for a float32
checkpoint, else bfloat16; OMP_NUM_THREADS = cores - 1 unless set), and the ``cascade``
attention backend is chosen (rule: ``sglang_pr.cascade.policy``) unless you picked a backend
or a speculative algorithm. On a GPU machine nothing is added.

sglang-pr's own flags (not passed on to SGLang):

  --deepconf-limits JSON   caps on every DeepConf group this server runs, e.g.
                           '{"max_budget": 256, "max_width": 64}' (or @file.json); fields of
                           sglang_pr.deepconf.config.ServerLimits, reported by
                           /sglang_pr/info. Sets SGLANG_PR_DEEPCONF_LIMITS for the server.

Data parallelism (``--dp-size N``): every rank is a scheduler process of its own. On a CPU,
SGLang binds each rank to a NUMA node unless ``SGLANG_CPU_OMP_THREADS_BIND`` says otherwise
(``utils/numa_utils.py``), so with more ranks than nodes (2 ranks on a one-node machine) it
stops at start-up; ``serve`` then splits the usable cores between the ranks itself (``0|1`` on
2 cores) and gives each rank its share of OpenMP threads. More ranks (dp x tp x pp) than cores,
or than GPUs, is refused before anything starts.

A bad flag, a missing model, a busy port, a bad flag combination or more ranks than the
machine holds exits with status 2 and one line naming it, before anything starts.
"""

from __future__ import annotations

import argparse
import os
import shlex
import socket
import sys
from pathlib import Path

from sglang_pr.cascade.policy import cascade_server_defaults, should_use_cascade
from sglang_pr.cli import CliError
from sglang_pr.cpu_platform import has_accelerator
from sglang_pr.model import SHIPPED_MODEL_DIR
from sglang_pr.plugin import plugin_enabled
from sglang_pr.runtime_defaults import cpu_server_defaults, cpu_torch_threads, flags_argv

LIMITS_FLAG = "--deepconf-limits"
BIND_ENV = "SGLANG_CPU_OMP_THREADS_BIND"  # SGLang's per-rank CPU core sets, "|"-separated


def add_parser(sub) -> None:
    p = sub.add_parser(
        "serve",
        add_help=False,
        help="launch SGLang's server with sglang_pr (all SGLang flags pass through)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.set_defaults(func=run, accepts_extra=True)


class _Parser(argparse.ArgumentParser):
    """argparse that raises :class:`CliError` instead of printing its usage: one line, exit 2."""

    def error(self, message: str):
        raise CliError(message)


def own_parser() -> argparse.ArgumentParser:
    """The flags ``serve`` takes for itself; everything else is SGLang's."""
    p = _Parser(prog="sglang-pr serve", add_help=False, allow_abbrev=False)
    g = p.add_argument_group("sglang-pr serve (not passed on to SGLang)")
    g.add_argument(LIMITS_FLAG, metavar="JSON", default=None,
                   help="DeepConf group caps (ServerLimits fields) as JSON or @file")
    return p


def sglang_parser(given_only: bool) -> argparse.ArgumentParser:
    """SGLang's own argument parser; ``given_only``: every default suppressed and nothing
    required, so a parse yields exactly the fields on the command line."""
    from sglang.srt.server_args import ServerArgs

    parser = _Parser(prog="sglang-pr serve", add_help=False)
    ServerArgs.add_cli_args(parser)
    if given_only:
        for action in parser._actions:
            action.default, action.required = argparse.SUPPRESS, False
    return parser


def parse_sglang(argv: list[str], given_only: bool = False) -> dict[str, object]:
    """``argv`` read as SGLang reads it (a ``--config`` YAML merged in first, as
    ``prepare_server_args`` does): ServerArgs field -> value."""
    parser = sglang_parser(given_only)
    if "--config" in argv:
        from sglang.srt.utils.server_args_config_parser import ConfigArgumentMerger

        try:
            argv = ConfigArgumentMerger(parser).merge_config_with_args(argv)
        except (ValueError, OSError) as e:
            raise CliError(f"--config: {e}") from None
    settings = vars(parser.parse_args(argv))
    settings.pop("config", None)
    return settings


def build_server_argv(argv: list[str], gpu: bool | None = None) -> list[str]:
    """The SGLang argv ``sglang-pr serve`` runs: the user's flags plus the defaults they omitted,
    with a model name (``--model-path smollm2-135m``) replaced by its folder."""
    gpu = has_accelerator() if gpu is None else gpu
    given = parse_sglang(argv, given_only=True)
    added: dict[str, object] = {}
    model_path = given.get("model_path")
    if model_path is None:
        model_path = added["model_path"] = str(SHIPPED_MODEL_DIR)
    folder = check_model_path(str(model_path))
    if folder != str(model_path):
        argv, model_path = with_model_path(argv, folder), folder
    if plugin_enabled() and should_use_cascade(given, has_accelerator=gpu):
        added.update(cascade_server_defaults(gpu))
    if not gpu:
        for field, value in cpu_server_defaults(model_path).items():
            if field not in given:
                added.setdefault(field, value)  # cascade's backend stays chosen
    return [*argv, *flags_argv(added)]


def check_model_path(model_path: str) -> str:
    """What SGLang should load for ``--model-path``: a known name's folder (materialised on
    first use, see ``sglang_pr.models``), a model folder (checked for config.json and a
    tokenizer), a file as given (e.g. a GGUF), or an ``org/name`` hub id left for SGLang.
    Anything else is a CliError of one line: the folder and the missing file, or the names."""
    from sglang_pr.models import ModelError, known_names, resolve_model_path

    path = Path(model_path).expanduser()
    if path.is_file():
        return model_path
    if path.is_dir() or model_path in known_names():
        try:
            return str(resolve_model_path(model_path))
        except ModelError as e:
            raise CliError(f"--model-path {model_path}: {e}") from None
    hub_id = model_path.count("/") == 1 and not model_path.startswith(("/", ".", "~"))
    if not hub_id:
        raise CliError(f"--model-path {model_path}: no such file or directory, nor a known "
                       f"model name (known: {', '.join(known_names())})")
    return model_path


MODEL_PATH_FLAGS = ("--model-path", "--model")  # SGLang's spellings of the flag


def with_model_path(argv: list[str], folder: str) -> list[str]:
    """``argv`` with its (last) model path replaced by ``folder``, in place so the command line
    printed reads as typed; appended (argparse: the last one wins) when it came another way,
    e.g. from a --config file."""
    out = list(argv)
    for i in range(len(out) - 1, -1, -1):
        flag, eq, _ = out[i].partition("=")
        if flag in MODEL_PATH_FLAGS and eq:
            out[i] = f"{flag}={folder}"
            return out
        if out[i] in MODEL_PATH_FLAGS and i + 1 < len(out):
            out[i + 1] = folder
            return out
    return [*out, "--model-path", folder]


def check_port_free(host: str, port: int) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        # Bind as uvicorn will (SO_REUSEADDR): a port whose old connections sit in TIME_WAIT is
        # free for SGLang, a port with a listener is not.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as e:
            raise CliError(f"--port {port}: already in use on {host} ({e.strerror})") from None


def local_ranks(settings: dict) -> int:
    """Scheduler ranks on this node: dp x tp x pp (what SGLang binds threads or GPUs for)."""
    total = int(settings.get("dp_size") or 1) * int(settings.get("tp_size") or 1) \
        * int(settings.get("pp_size") or 1)
    return max(1, total // max(1, int(settings.get("nnodes") or 1)))


def check_rank_capacity(settings: dict, gpu: bool) -> int:
    """Refuse more ranks than this machine holds; on a CPU, bind them to cores (see above).
    Returns the number of ranks on this node."""
    from sglang.srt.utils.common import get_cpu_ids_by_node

    from sglang_pr.server.dp import cpu_rank_binding, usable_cpus

    ranks = local_ranks(settings)
    sizes = [(f"--{k[:2]}-size", int(settings.get(k) or 1)) for k in ("dp_size", "tp_size",
                                                                       "pp_size")]
    flags = " x ".join(f"{flag} {n}" for flag, n in sizes if n > 1 or flag == "--dp-size")
    if gpu:
        import torch

        gpus = torch.cuda.device_count()
        if gpus and ranks > gpus:
            raise CliError(f"{flags}: {ranks} ranks on this node, but it has {gpus} GPU(s)")
        return ranks
    cpus = usable_cpus()
    if ranks > len(cpus):
        raise CliError(f"{flags}: {ranks} ranks, but this machine gives this process "
                       f"{len(cpus)} CPU core(s): each rank needs at least one")
    bind = os.environ.get(BIND_ENV)
    if bind is not None and bind != "all":
        if len(bind.split("|")) < ranks:
            raise CliError(f"{BIND_ENV}={bind}: {len(bind.split('|'))} core group(s) for "
                           f"{ranks} ranks ({flags})")
    elif ranks > len(get_cpu_ids_by_node()):  # SGLang's own default would assert
        os.environ[BIND_ENV] = cpu_rank_binding(ranks, cpus)
    return ranks


def apply_deepconf_limits(raw: str | None) -> None:
    """Validate ``--deepconf-limits`` and hand it to the server's processes (they inherit this
    environment); a value already in the environment is checked too."""
    from sglang_pr.deepconf.config import LIMITS_ENV, ServerLimits, server_limits
    from sglang_pr.validation import ConfigError, json_setting, parse_model

    try:
        if raw is not None:
            limits = parse_model(ServerLimits, json_setting(LIMITS_FLAG, {LIMITS_FLAG: raw}),
                                 LIMITS_FLAG)
            os.environ[LIMITS_ENV] = limits.model_dump_json()
            server_limits.cache_clear()  # read once per process: drop a value read before
        server_limits()
    except ConfigError as e:
        raise CliError(str(e)) from None


def print_help() -> None:
    from sglang.srt.server_args import ServerArgs

    print(__doc__)
    parser = argparse.ArgumentParser(prog="sglang-pr serve", add_help=False,
                                     parents=[own_parser()])
    ServerArgs.add_cli_args(parser)
    parser.print_help()


def run(args: argparse.Namespace, extra: list[str]) -> int:
    from sglang.srt.plugins import load_plugins

    own, sglang_flags = own_parser().parse_known_args(extra)
    # Plugins first: they add choices (e.g. --attention-backend cascade) that the flag check
    # and --help must see. SGLang guards load_plugins() against a second call in this process.
    # The limits go into the environment before, in case a plugin reads them while loading.
    apply_deepconf_limits(own.deepconf_limits)
    load_plugins()
    if "-h" in extra or "--help" in extra:
        print_help()
        return 0
    argv = build_server_argv(sglang_flags)
    settings = parse_sglang(argv)  # the complete command line, as SGLang will read it
    check_port_free(str(settings["host"]), int(settings["port"]))
    ranks = check_rank_capacity(settings, has_accelerator())
    if not has_accelerator():
        # Read when the scheduler subprocess starts its OpenMP runtime; the user's value wins.
        os.environ.setdefault("OMP_NUM_THREADS", str(max(1, cpu_torch_threads() // ranks)))
    print("sglang-pr serve: sglang.launch_server " + shlex.join(argv), file=sys.stderr,
          flush=True)
    return launch_in_process(argv)


def launch_in_process(argv: list[str]) -> int:
    """Same steps as ``python -m sglang.launch_server``, in this process."""
    from sglang.launch_server import run_server
    from sglang.srt.server_args import prepare_server_args
    from sglang.srt.utils import kill_process_tree

    try:
        server_args = prepare_server_args(argv)
        # run_server resolves the arguments first thing; doing it here turns a bad combination
        # (SGLang's checks, or a plugin's, e.g. Medusa heads that don't fit the model) into a
        # one-line error instead of a stack. resolve_once() is a no-op the second time. gRPC
        # mode seeds a field before resolving (launch_server.run_server), so leave it be.
        if not any(getattr(server_args, f, False) for f in ("grpc_mode", "smg_grpc_mode")):
            server_args.resolve_once()
    except ValueError as e:
        raise CliError(str(e)) from None
    try:
        run_server(server_args)
    finally:
        kill_process_tree(os.getpid(), include_parent=False)
    return 0
