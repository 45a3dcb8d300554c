"""Start and stop ``sglang-pr serve`` processes (for the demo, tests and benchmarks).

The server runs in its own process group, so stopping it reaches SGLang's scheduler and
detokenizer subprocesses too: nothing is left behind to busy-poll a core.

Whatever ends the program that launched it, the server goes with it: every handle is stopped
by ``with``/``finally`` blocks and, failing those, at interpreter exit (``atexit``). Python
runs neither when SIGTERM (or SIGHUP) kills it with the default action, so while a server is
up those signals stop the servers and then raise ``SystemExit(128 + signal)``; SIGINT already
raises KeyboardInterrupt. Only SIGKILL leaves a server behind.
"""

from __future__ import annotations

import atexit
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import requests

from sglang_pr.optional import require

HEALTH_POLL_S = 0.5
# Signals whose default action would end this process without running cleanup.
EXIT_SIGNALS = (signal.SIGTERM, signal.SIGHUP)


class ServerStartError(RuntimeError):
    """The server process died or never became healthy; carries the log tail."""


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def free_port_in(ports: range, host: str = "127.0.0.1") -> int:
    """The first free port of ``ports`` (a benchmark's own range on a shared machine)."""
    for port in ports:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind((host, port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port in {ports.start}..{ports.stop - 1}")


class ServerHandle:
    """A running server process (``sglang-pr serve``, or what ``module`` ran); a context
    manager that stops it on exit."""

    def __init__(self, proc: subprocess.Popen, base_url: str, log_path: Path, argv: list[str],
                 name: str = "sglang-pr serve"):
        self.proc, self.base_url, self.log_path, self.argv = proc, base_url, log_path, argv
        self.name = name  # what the messages call it (the module it runs)

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
        psutil = require("psutil", "bench", "server process times")
        root = psutil.Process(self.proc.pid)
        return [root, *root.children(recursive=True)]

    def stop(self, timeout_s: float = 20.0) -> None:
        """SIGTERM the whole process group, then SIGKILL whatever is left after the timeout."""
        self._kill_group(timeout_s)
        _forget(self)  # not when interrupted: then the exit paths below still stop it

    def _kill_group(self, timeout_s: float) -> None:
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


# Servers started by this process and not stopped yet; what the exit paths below stop.
_RUNNING: list[ServerHandle] = []
# Handlers that were in place before ours, restored once the last server is stopped.
_PREVIOUS_HANDLERS: dict[int, object] = {}
_exiting = False


def _track(handle: ServerHandle) -> None:
    if not _RUNNING and not _PREVIOUS_HANDLERS:
        _install_exit_handlers()
    _RUNNING.append(handle)


def _forget(handle: ServerHandle) -> None:
    if handle in _RUNNING:
        _RUNNING.remove(handle)
    if not _RUNNING:
        _restore_handlers()


def _exit_on_signal(signum, frame) -> None:
    """Stop every server, then turn the signal into SystemExit so the program's own
    ``with``/``finally`` blocks and atexit run on the way out.

    The servers go first, here: a program may swallow the SystemExit (pytest reports it as a
    failed test and carries on). Stopping the last one restores the previous handlers, so a
    second signal then acts as it would have without us.
    """
    global _exiting
    if _exiting:  # a second signal while stopping: let the cleanup under way finish
        return
    _exiting = True
    _stop_all()
    raise SystemExit(128 + signum)


def _install_exit_handlers() -> None:
    """Only where the default action stands: a handler the program set itself (or an ignored
    SIGHUP under nohup) is its own business. Signal handlers can only be set from the main
    thread; elsewhere atexit and ``with`` blocks still cover exceptions and SIGINT."""
    global _exiting
    if threading.current_thread() is not threading.main_thread():
        return
    _exiting = False
    for sig in EXIT_SIGNALS:
        if signal.getsignal(sig) == signal.SIG_DFL:
            _PREVIOUS_HANDLERS[sig] = signal.signal(sig, _exit_on_signal)


def _restore_handlers() -> None:
    if threading.current_thread() is not threading.main_thread():
        return
    for sig, previous in list(_PREVIOUS_HANDLERS.items()):
        if signal.getsignal(sig) is _exit_on_signal:
            signal.signal(sig, previous)
        del _PREVIOUS_HANDLERS[sig]


@atexit.register
def _stop_all() -> None:
    """At interpreter exit (normal end, an uncaught exception, SystemExit from a signal).
    Newest first: a router goes before the workers it sends requests to."""
    for handle in reversed(list(_RUNNING)):
        handle.stop()


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
    launcher with exactly the given flags (no sglang-pr defaults), ``("smg.launch_router",)``
    SGLang's gateway.
    Raises ServerStartError (with the log tail) if the process exits or times out.
    """
    handle = start(model_path, extra_args, port, env, log_path, module)
    try:
        wait_healthy(handle, timeout_s)
    except BaseException:
        handle.stop()
        raise
    return handle


def start(
    model_path: str | Path | None = None,
    extra_args: Sequence[str] = (),
    port: int | None = None,
    env: dict[str, str] | None = None,
    log_path: str | Path | None = None,
    module: Sequence[str] = ("sglang_pr.cli", "serve"),
) -> ServerHandle:
    """:func:`launch` without the wait: the process is started and tracked (stopped on any
    exit), so several servers can start at once and be waited for together."""
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
    handle = ServerHandle(proc, f"http://127.0.0.1:{port}", log_path, argv,
                          name=_display_name(module))
    _track(handle)
    return handle


def _display_name(module: Sequence[str]) -> str:
    return "sglang-pr serve" if tuple(module) == ("sglang_pr.cli", "serve") else " ".join(module)


def wait_healthy(handle: ServerHandle, timeout_s: float) -> None:
    """Until ``GET /health`` answers 200; ServerStartError (log tail) if it dies or times out."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not handle.alive:
            raise ServerStartError(
                f"{handle.name} exited with status {handle.proc.returncode}; "
                f"log {handle.log_path}:\n{handle.log_tail()}"
            )
        try:
            if requests.get(handle.base_url + "/health", timeout=5).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(HEALTH_POLL_S)
    raise ServerStartError(
        f"{handle.name} not healthy after {timeout_s:.0f} s; log {handle.log_path}:\n"
        f"{handle.log_tail()}"
    )


def server_cpu_seconds(procs: Sequence) -> tuple[float, float]:
    """(CPU seconds of a server's process tree, of its scheduler process) used so far.

    ``procs``: ``psutil.Process`` objects, e.g. from :meth:`ServerHandle.processes`. On a shared
    machine wall time swings with other sessions' load; CPU time per token swings much less.
    """
    psutil = require("psutil", "bench", "server CPU times")
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
