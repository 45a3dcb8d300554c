"""``sglang-pr cluster``: N ``sglang-pr serve`` workers behind SGLang's gateway (smg).

    sglang-pr cluster --workers 2 [--policy cache_aware] [--port P] [worker flags...]
    sglang-pr cluster --worker-urls http://127.0.0.1:30001 http://127.0.0.1:30002

Starts the workers on free ports (each with ``--sleep-on-idle`` and the CPU defaults ``serve``
adds; every flag this command does not know is a worker flag), checks that each one runs the
plugin (``GET /sglang_pr/info``), starts ``python -m smg.launch_router --worker-urls ...
--policy cache_aware`` in front, waits until the router lists the workers, prints the
router's address and each worker's, and runs until interrupted (Ctrl-C, SIGTERM): then it
stops the router and every worker it started. With ``--worker-urls`` it fronts running
workers instead (started with ``sglang-pr serve``) and stops only the router.

Through the router: ``/v1/chat/completions`` and ``/v1/completions`` (with the ``deepconf``
body field), ``/generate`` and SGLang frontend programs. The plugin's own routes
(``/sglang_pr/deepconf/group``, ``/sglang_pr/info``) need a worker's address.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time

from sglang_pr.cli import CliError

WATCH_POLL_S = 1.0


def add_parser(sub) -> None:
    from sglang_pr.server.cluster import DEFAULT_POLICY, POLICIES

    p = sub.add_parser(
        "cluster",
        help="N `sglang-pr serve` workers behind SGLang's router (smg), started as one",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        allow_abbrev=False,  # a worker flag must never be read as an abbreviation of ours
    )
    p.add_argument("--workers", type=int, default=2, help="workers to start (default 2)")
    p.add_argument("--worker-urls", nargs="+", metavar="URL", default=None,
                   help="front these running workers instead of starting any")
    p.add_argument("--policy", default=DEFAULT_POLICY, choices=POLICIES,
                   help=f"smg's routing policy (default {DEFAULT_POLICY})")
    p.add_argument("--port", type=int, default=None, help="the router's port (default: free)")
    p.add_argument("--host", default="127.0.0.1", help="the router's host")
    p.add_argument("--router-args", default="", metavar="FLAGS",
                   help="more smg flags, one quoted string: --router-args='--log-level info'")
    p.add_argument("--log-dir", default=None, help="where worker/router logs go "
                   "(default: temporary files, printed at start)")
    p.add_argument("--timeout", type=float, default=900.0,
                   help="seconds to wait for the workers to come up (default 900)")
    p.set_defaults(func=run, accepts_extra=True)


def check_args(args: argparse.Namespace, worker_flags: list[str]) -> list[str]:
    """Arguments wrong on their face, before anything starts; returns the router's flags."""
    if args.worker_urls is None and args.workers < 1:
        raise CliError(f"--workers {args.workers}: must be at least 1")
    if args.worker_urls is not None and worker_flags:
        raise CliError(f"{worker_flags[0]}: worker flags apply to workers this command "
                       "starts, not to --worker-urls")
    if args.port is not None and not 0 < args.port < 65536:
        raise CliError(f"--port {args.port}: must be in 1..65535")
    if args.port is not None:
        from sglang_pr.cli.serve import check_port_free

        check_port_free(args.host, args.port)
    try:
        router_args = shlex.split(args.router_args)
    except ValueError as e:
        raise CliError(f"--router-args: {e}") from None
    for flag in ("--port", "--host", "--worker-urls", "--policy"):
        if flag in {a.split("=", 1)[0] for a in router_args}:
            raise CliError(f"--router-args {flag}: give it to `cluster` itself")
    return router_args


def run(args: argparse.Namespace, extra: list[str]) -> int:
    from sglang_pr.server.cluster import ClusterError, router_argv, start_cluster
    from sglang_pr.server.launcher import ServerStartError

    router_args = check_args(args, extra)
    try:
        router_argv(["-"], args.policy, args.host, router_args)
        cluster = start_cluster(
            args.workers, extra, worker_urls=args.worker_urls or (), policy=args.policy,
            port=args.port, host=args.host, router_args=router_args,
            log_dir=args.log_dir, timeout_s=args.timeout)
    except ClusterError as e:
        raise CliError(str(e)) from None
    except ServerStartError as e:
        raise CliError(str(e).splitlines()[0]) from None
    with cluster:
        _print_addresses(cluster)
        return _watch(cluster)


def _print_addresses(cluster) -> None:
    print(f"router: {cluster.url}  (model {cluster.model_id!r}; log {cluster.router.log_path})",
          flush=True)
    logs = {h.base_url: h.log_path for h in cluster.workers}
    for i, url in enumerate(cluster.worker_urls):
        log = f"  (log {logs[url]})" if url in logs else ""
        print(f"worker {i}: {url}{log}", flush=True)


def _watch(cluster) -> int:
    """Until interrupted; a worker that dies is reported once (the router stops sending it
    work), the router dying ends the command."""
    reported: set[str] = set()
    while True:
        if not cluster.router.alive:
            print(f"sglang-pr cluster: the router exited (status {cluster.router.proc.returncode}"
                  f"); log {cluster.router.log_path}", file=sys.stderr, flush=True)
            return 1
        for h in cluster.workers:
            if not h.alive and h.base_url not in reported:
                reported.add(h.base_url)
                print(f"sglang-pr cluster: worker {h.base_url} exited (status "
                      f"{h.proc.returncode}); log {h.log_path}", file=sys.stderr, flush=True)
        time.sleep(WATCH_POLL_S)
