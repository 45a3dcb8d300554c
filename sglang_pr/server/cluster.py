"""Several ``sglang-pr serve`` workers behind SGLang's gateway, started and stopped as one.

The gateway is ``smg`` (SGLang Model Gateway, the maintained successor of ``sglang-router``),
run as ``python -m smg.launch_router --worker-urls ... --policy cache_aware``. Plain worker
mode, never its DP-aware mode: DP-aware sets ``data_parallel_rank`` on every request it
forwards, and an explicit rank is never overridden by ``sglang_pr.server.dp``, so it could
split a fork group over ranks. In plain mode a fork group is one HTTP request (OpenAI
``extra_body.deepconf``, or ``/generate``), so the router hands the whole group to one worker.

What smg forwards: ``/v1/*``, ``/generate`` and SGLang's info routes; not the plugin's own
routes (``/sglang_pr/...`` -> 404 ``unknown_url``). So the group route and
``/sglang_pr/info`` need a worker's own address, which :class:`Cluster` keeps.

Each piece is usable alone: :func:`start_workers`, :func:`check_worker` (the plugin is loaded
there: ``GET /sglang_pr/info``), :func:`start_router`, :func:`wait_router_ready`;
:func:`start_cluster` runs them in order and stops whatever it started if a step fails.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import requests

from sglang_pr.server.launcher import ServerHandle, ServerStartError, free_port, start, \
    wait_healthy

ROUTER_MODULE = ("smg.launch_router",)
INFO_PATH = "/sglang_pr/info"  # the plugin's own route (sglang_pr.server.routes)
# smg 1.13.0's --policy choices, less "manual" (needs a routing key per request) and the
# PD-only "bucket". cache_aware: a prompt goes to the worker whose radix tree (as the router
# mirrors it) shares the longest prefix with it, unless the load is out of balance.
POLICIES = ("cache_aware", "round_robin", "random", "power_of_two", "least_load",
            "consistent_hashing", "prefix_hash")
DEFAULT_POLICY = "cache_aware"
# Router defaults, each a plain smg flag the user can override through router_args:
# * one attempt per request: smg's default (5 retries) re-sends a request whose worker died
#   mid-way to the next worker, which for a fork group means running the whole group again
#   (measured: a 64-branch group whose worker was killed came back 200 after 17 s, run twice);
#   with one attempt the client gets smg's 500 ``call_upstream_request_error`` naming the
#   worker at once and decides itself;
# * a worker that refused 3 connections in a row is skipped (circuit breaker; smg's default 10)
#   and health-checked every 5 s, so a dead worker stops getting traffic within seconds;
# * on stop it waits at most 5 s for requests in flight (smg's default 180 s would hold every
#   stop of a cluster until the launcher's SIGKILL).
ROUTER_DEFAULT_ARGS = ("--retry-max-retries", "1", "--cb-failure-threshold", "3",
                       "--health-check-interval-secs", "5", "--shutdown-grace-period-secs", "5",
                       "--log-level", "warn")
BIND_ENV = "SGLANG_CPU_OMP_THREADS_BIND"


class ClusterError(RuntimeError):
    """A worker or the router cannot serve as asked; one line naming the cause."""


@dataclass
class Cluster:
    """A router and its workers. ``workers`` holds the handles this process started (empty
    when it was given running workers' URLs); ``worker_urls`` every worker's address."""

    router: ServerHandle
    worker_urls: list[str]
    workers: list[ServerHandle] = field(default_factory=list)
    model_id: str = ""  # what requests through the router must name as "model"

    @property
    def url(self) -> str:
        return self.router.base_url

    def __enter__(self) -> "Cluster":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def stop(self) -> None:
        """The router first (no new requests reach a worker that is going away)."""
        for handle in (self.router, *self.workers):
            handle.stop()


# --- capacity ---------------------------------------------------------------------------

def worker_ranks(worker_args: Sequence[str]) -> int:
    """Scheduler ranks one worker runs (dp x tp x pp of its flags)."""
    from sglang_pr.cli.serve import local_ranks, parse_sglang

    return local_ranks(parse_sglang(list(worker_args), given_only=True))


def check_capacity(workers: int, ranks_per_worker: int, gpu: bool,
                   cpus: Optional[Sequence[int]] = None) -> None:
    """Refuse more workers than the machine holds: each rank needs a CPU core of its own (a
    GPU on a GPU machine). Raises ClusterError naming ``--workers``."""
    if workers < 1:
        raise ClusterError(f"--workers {workers}: must be at least 1")
    need = workers * ranks_per_worker
    per = f" x {ranks_per_worker} ranks each" if ranks_per_worker > 1 else ""
    if gpu:
        import torch

        have, what = torch.cuda.device_count(), "GPU(s)"
    else:
        from sglang_pr.server.dp import usable_cpus

        have, what = len(cpus if cpus is not None else usable_cpus()), "CPU core(s)"
    if need > have:
        raise ClusterError(f"--workers {workers}{per}: {need} ranks, but this machine gives "
                           f"this process {have} {what}: each rank needs one of its own")


def worker_envs(workers: int, ranks_per_worker: int, gpu: bool,
                cpus: Optional[Sequence[int]] = None) -> list[dict[str, str]]:
    """Per worker: its own share of the machine, as ``serve --dp-size`` gives its ranks
    (contiguous near-equal CPU core sets, or GPUs). A binding the user set is left alone."""
    if gpu:
        if "CUDA_VISIBLE_DEVICES" in os.environ:
            return [{} for _ in range(workers)]
        return [{"CUDA_VISIBLE_DEVICES": ",".join(
            str(i * ranks_per_worker + r) for r in range(ranks_per_worker))}
            for i in range(workers)]
    from sglang_pr.runtime_defaults import cpu_torch_threads
    from sglang_pr.server.dp import cpu_rank_binding, usable_cpus

    cpus = list(cpus if cpus is not None else usable_cpus())
    shares = cpu_rank_binding(workers * ranks_per_worker, cpus).split("|")
    # one scheduler per rank; like serve's DP split, the OpenMP threads of all ranks together
    # leave a core for the HTTP/tokenizer processes
    threads = str(max(1, cpu_torch_threads(len(cpus)) // (workers * ranks_per_worker)))
    envs = []
    for i in range(workers):
        env = {} if "OMP_NUM_THREADS" in os.environ else {"OMP_NUM_THREADS": threads}
        if BIND_ENV not in os.environ:
            env[BIND_ENV] = "|".join(shares[i * ranks_per_worker:(i + 1) * ranks_per_worker])
        envs.append(env)
    return envs


# --- workers ------------------------------------------------------------------------------

def start_workers(workers: int, worker_args: Sequence[str] = (), *,
                  model_path: Optional[str] = None, env: Optional[dict] = None,
                  log_dir: Optional[Path] = None, timeout_s: float = 900.0,
                  gpu: Optional[bool] = None) -> list[ServerHandle]:
    """Start ``workers`` ``sglang-pr serve`` processes at once on free ports (each with
    ``--sleep-on-idle`` and serve's CPU defaults) and wait until all are healthy; on any
    failure every one of them is stopped."""
    from sglang_pr.cpu_platform import has_accelerator

    gpu = has_accelerator() if gpu is None else gpu
    args = list(worker_args)
    if "--sleep-on-idle" not in args:
        args.append("--sleep-on-idle")
    ranks = worker_ranks(args)
    check_capacity(workers, ranks, gpu)
    handles: list[ServerHandle] = []
    try:
        for i, share in enumerate(worker_envs(workers, ranks, gpu)):
            log = None if log_dir is None else Path(log_dir) / f"worker{i}.log"
            handles.append(start(model_path, args, env={**(env or {}), **share},
                                 log_path=log))
        deadline = time.monotonic() + timeout_s
        for h in handles:
            wait_healthy(h, max(1.0, deadline - time.monotonic()))
    except BaseException:
        for h in handles:
            h.stop()
        raise
    return handles


def check_worker(url: str, timeout_s: float = 30.0) -> dict:
    """The worker's ``/sglang_pr/info``: it answers and runs the plugin, or ClusterError."""
    target = url.rstrip("/") + INFO_PATH
    try:
        resp = requests.get(target, timeout=timeout_s)
    except requests.RequestException as e:
        raise ClusterError(f"worker {url}: not reachable ({type(e).__name__}); "
                           "is it running?") from None
    info = None
    if resp.status_code == 200:
        try:
            info = resp.json()
        except ValueError:
            info = None
    if not isinstance(info, dict) or info.get("name") != "sglang_pr":
        raise ClusterError(
            f"worker {url}: the sglang_pr plugin is not loaded there (GET {INFO_PATH} -> HTTP "
            f"{resp.status_code}); start it with `sglang-pr serve`, and if SGLANG_PLUGINS is "
            "set it must name sglang_pr")
    return info


def served_model(url: str, timeout_s: float = 30.0) -> str:
    """The model id a worker reports (``/v1/models``): what requests must name."""
    try:
        data = requests.get(url.rstrip("/") + "/v1/models", timeout=timeout_s).json()["data"]
        return str(data[0]["id"])
    except (requests.RequestException, ValueError, KeyError, IndexError, TypeError):
        raise ClusterError(f"worker {url}: GET /v1/models names no model") from None


def check_workers(urls: Sequence[str]) -> str:
    """Every worker runs the plugin and serves the same model; returns that model id."""
    if not urls:
        raise ClusterError("--worker-urls: give at least one worker")
    models = {}
    for url in urls:
        check_worker(url)
        models[url] = served_model(url)
    if len(set(models.values())) > 1:
        listing = ", ".join(f"{u} serves {m}" for u, m in models.items())
        raise ClusterError(f"--worker-urls: the workers serve different models ({listing})")
    return next(iter(models.values()))


# --- router -------------------------------------------------------------------------------

def router_argv(worker_urls: Sequence[str], policy: str = DEFAULT_POLICY,
                host: str = "127.0.0.1", router_args: Sequence[str] = ()) -> list[str]:
    """smg's flags (without ``--port``, which the launcher adds)."""
    if policy not in POLICIES:
        raise ClusterError(f"--policy {policy}: choose one of {', '.join(POLICIES)}")
    if "--dp-aware" in router_args:
        raise ClusterError("--router-args --dp-aware: smg's DP-aware mode sets a DP rank per "
                           "request and could split a fork group; use plain worker mode")
    given = {a.split("=", 1)[0] for a in router_args if a.startswith("--")}
    defaults = [a for flag, value in zip(ROUTER_DEFAULT_ARGS[::2], ROUTER_DEFAULT_ARGS[1::2])
                if flag not in given for a in (flag, value)]
    return ["--host", host, "--worker-urls", *worker_urls, "--policy", policy, *defaults,
            *router_args]


def start_router(worker_urls: Sequence[str], *, policy: str = DEFAULT_POLICY,
                 port: Optional[int] = None, host: str = "127.0.0.1",
                 router_args: Sequence[str] = (), log_path: Optional[Path] = None,
                 timeout_s: float = 120.0) -> ServerHandle:
    """Start smg in front of ``worker_urls`` and wait until it routes to every one of them."""
    from sglang_pr.optional import require

    require("smg", "router", "SGLang's gateway")
    argv = router_argv(worker_urls, policy, host, router_args)
    handle = start(None, argv, port=port or free_port(host), log_path=log_path,
                   module=ROUTER_MODULE)
    try:
        if host not in ("127.0.0.1", "localhost"):
            handle.base_url = f"http://{'127.0.0.1' if host == '0.0.0.0' else host}:" \
                              f"{handle.base_url.rsplit(':', 1)[1]}"
        wait_healthy(handle, timeout_s)
        wait_router_ready(handle, len(worker_urls), timeout_s)
    except BaseException:
        handle.stop()
        raise
    return handle


def router_workers(router_url: str) -> list[dict]:
    """The workers the router has registered (``GET /workers``)."""
    body = requests.get(router_url.rstrip("/") + "/workers", timeout=10).json()
    return list(body.get("workers", [])) if isinstance(body, dict) else list(body)


def wait_router_ready(router: ServerHandle, n_workers: int, timeout_s: float = 120.0) -> None:
    """smg registers workers asynchronously: wait until ``/workers`` lists all of them healthy
    and ``/v1/models`` names a model."""
    deadline = time.monotonic() + timeout_s
    last = "no answer"
    while time.monotonic() < deadline:
        if not router.alive:
            raise ServerStartError(f"smg exited with status {router.proc.returncode}; log "
                                   f"{router.log_path}:\n{router.log_tail()}")
        try:
            workers = router_workers(router.base_url)
            healthy = [w for w in workers if w.get("is_healthy", True)]
            models = requests.get(router.base_url + "/v1/models", timeout=10).json()
            if len(healthy) >= n_workers and models.get("data"):
                return
            last = f"{len(healthy)} of {n_workers} workers registered"
        except (requests.RequestException, ValueError, AttributeError) as e:
            last = type(e).__name__
        time.sleep(0.5)
    raise ServerStartError(f"smg not routing after {timeout_s:.0f} s ({last}); log "
                           f"{router.log_path}:\n{router.log_tail()}")


# --- all together ---------------------------------------------------------------------------

def start_cluster(workers: int = 2, worker_args: Sequence[str] = (), *,
                  worker_urls: Sequence[str] = (), policy: str = DEFAULT_POLICY,
                  port: Optional[int] = None, host: str = "127.0.0.1",
                  router_args: Sequence[str] = (), model_path: Optional[str] = None,
                  env: Optional[dict] = None, log_dir: Optional[Path] = None,
                  timeout_s: float = 900.0) -> Cluster:
    """Workers (started here, or the running ``worker_urls``), each checked for the plugin,
    then the router in front of them. Whatever this started is stopped if a step fails."""
    router_argv(["-"], policy, host, router_args)  # bad router settings: before any start
    if log_dir is not None:
        Path(log_dir).mkdir(parents=True, exist_ok=True)
    handles = [] if worker_urls else start_workers(
        workers, worker_args, model_path=model_path, env=env, log_dir=log_dir,
        timeout_s=timeout_s)
    urls = list(worker_urls) or [h.base_url for h in handles]
    try:
        model_id = check_workers(urls)
        router = start_router(urls, policy=policy, port=port, host=host,
                              router_args=router_args,
                              log_path=None if log_dir is None else Path(log_dir) / "router.log",
                              timeout_s=min(timeout_s, 300.0))
    except BaseException:
        for h in handles:
            h.stop()
        raise
    return Cluster(router=router, worker_urls=urls, workers=handles, model_id=model_id)


# --- a fork group through the router ----------------------------------------------------------

# SGLang sampling params whose OpenAI completion field is named differently
OPENAI_FIELDS = {"max_new_tokens": "max_tokens", "sampling_seed": "seed"}


def group_via_openai(base_url: str, text: str, deepconf: dict, sampling_params: Optional[dict]
                     = None, *, model: Optional[str] = None, timeout_s: float = 600.0) -> dict:
    """One fork group through ``/v1/completions`` with the ``deepconf`` body field: the route a
    router forwards (it answers 404 ``unknown_url`` to ``/sglang_pr/deepconf/group``).
    Returns the group route's shape where the OpenAI answer has it: ``answer``, ``text`` (the
    chosen trace), ``vote``, ``threshold``, ``totals``, ``traces`` (summaries, no text).
    Raises ClusterError with the server's message on any status but 200."""
    url = base_url.rstrip("/")
    model = model or served_model(url)
    body = {OPENAI_FIELDS.get(k, k): v for k, v in (sampling_params or {}).items()}
    body.update({"model": model, "prompt": text, "deepconf": deepconf})
    try:
        resp = requests.post(url + "/v1/completions", json=body, timeout=(10, timeout_s))
    except requests.RequestException as e:
        raise ClusterError(f"{url}/v1/completions: {type(e).__name__}") from None
    if resp.status_code != 200:
        detail = " ".join(resp.text[:500].split())
        raise ClusterError(f"{url}/v1/completions -> HTTP {resp.status_code}: {detail}")
    out = resp.json()
    meta = (out.get("metadata") or {}).get("deepconf") or {}
    return {**meta, "text": out["choices"][0]["text"]}
