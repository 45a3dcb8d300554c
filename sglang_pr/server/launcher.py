"""Start and stop ``sglang-pr serve`` processes (for the demo, tests and benchmarks).

The server runs in its own process group, so stopping it reaches SGLang's scheduler and
detokenizer subprocesses too: nothing is left behind to busy-poll a core.
"""

from __future__ import annotations

import atexit
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import requests

HEALTH_POLL_S = 0.5


class ServerStartError(RuntimeError):
    """The server process died or never became healthy; carries the log tail."""


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class ServerHandle:
    """A running ``sglang-pr serve`` process; a context manager that stops it on exit."""

    def __init__(self, proc: subprocess.Popen, base_url: str, log_path: Path, argv: list[str]):
        self.proc, self.base_url, self.log_path, self.argv = proc, base_url, log_path, argv

    def __enter__(self) -> "ServerHandle":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    def log_tail(self, n_lines: int = 40) -> str:
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join(lines[-n_lines:])

    def processes(self) -> list:
        """The server's process tree now (launcher, tokenizer/HTTP, scheduler, detokenizer)."""
        import psutil

        root = psutil.Process(self.proc.pid)
        return [root, *root.children(recursive=True)]

    def stop(self, timeout_s: float = 20.0) -> None:
        """SIGTERM the whole process group, then SIGKILL whatever is left after the timeout."""
        if self.proc.returncode is not None and not _group_alive(self.proc.pid):
            return
        for sig, wait_s in ((signal.SIGTERM, timeout_s), (signal.SIGKILL, 5.0)):
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                break
            deadline = time.monotonic() + wait_s
            while time.monotonic() < deadline and _group_alive(self.proc.pid):
                self.proc.poll()
                time.sleep(0.1)
            if not _group_alive(self.proc.pid):
                break
        self.proc.poll()


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie group leader still "exists"; reap it so the check can turn false.
    try:
        os.waitpid(pgid, os.WNOHANG)
    except ChildProcessError:
        pass
    return True


def launch(
    model_path: str | Path | None = None,
    extra_args: Sequence[str] = (),
    port: int | None = None,
    env: dict[str, str] | None = None,
    log_path: str | Path | None = None,
    timeout_s: float = 180.0,
    module: Sequence[str] = ("sglang_pr.cli", "serve"),
) -> ServerHandle:
    """Start ``sglang-pr serve`` and wait until /health answers 200.

    ``env`` entries are added to this process's environment (e.g. ``SGLANG_PLUGINS``).
    ``module``: what ``python -P -m`` runs; ``("sglang.launch_server",)`` starts SGLang's own
    launcher with exactly the given flags (no sglang-pr defaults).
    Raises ServerStartError (with the log tail) if the process exits or times out.
    """
    port = port or free_port()
    argv = ["--port", str(port), *extra_args]
    if model_path is not None:
        argv = ["--model-path", str(model_path), *argv]
    if log_path is None:
        fd, name = tempfile.mkstemp(prefix=f"sglang_pr_server_{port}_", suffix=".log")
        os.close(fd)
        log_path = name
    log_path = Path(log_path)
    log = open(log_path, "w")
    proc = subprocess.Popen(
        # -P: never put the working directory on sys.path. Run from the repo root, it would
        # make our kernels/ directory shadow the PyPI package `kernels` that SGLang imports.
        [sys.executable, "-P", "-m", *module, *argv],
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ, **(env or {})},
        start_new_session=True,  # own process group: stop() reaches every SGLang child
    )
    log.close()
    handle = ServerHandle(proc, f"http://127.0.0.1:{port}", log_path, argv)
    atexit.register(handle.stop)
    try:
        _wait_healthy(handle, timeout_s)
    except BaseException:
        handle.stop()
        raise
    return handle


def _wait_healthy(handle: ServerHandle, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not handle.alive:
            raise ServerStartError(
                f"sglang-pr serve exited with status {handle.proc.returncode}; "
                f"log {handle.log_path}:\n{handle.log_tail()}"
            )
        try:
            if requests.get(handle.base_url + "/health", timeout=5).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(HEALTH_POLL_S)
    raise ServerStartError(
        f"sglang-pr serve not healthy after {timeout_s:.0f} s; log {handle.log_path}:\n"
        f"{handle.log_tail()}"
    )


def server_cpu_seconds(procs: Sequence) -> tuple[float, float]:
    """(CPU seconds of a server's process tree, of its scheduler process) used so far.

    ``procs``: ``psutil.Process`` objects, e.g. from :meth:`ServerHandle.processes`. On a shared
    machine wall time swings with other sessions' load; CPU time per token swings much less.
    """
    import psutil

    total = sched = 0.0
    for p in procs:
        try:
            t = p.cpu_times()
            used = t.user + t.system
            is_sched = "scheduler" in " ".join(p.cmdline())
        except psutil.Error:
            continue
        total += used
        sched += used if is_sched else 0.0
    return total, sched
