"""A program that launched a server and is then killed with SIGTERM takes the server with it.

The test runs a small script that starts the shipped model's server through the launcher and
then waits; the test sends the script SIGTERM (what `kill`, CI timeouts and process managers
send) and checks that nothing of the server's process group is left running (SGLang's
scheduler would otherwise busy-poll a core). Without the launcher's handler the script dies at
once and the whole group stays up. SIGINT needs no handler (Python raises KeyboardInterrupt,
and atexit stops the server); it is not run here because each case costs a server start.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import psutil
import pytest

SCRIPT = textwrap.dedent("""
    import time
    from sglang_pr.server.launcher import launch

    handle = launch(env={"OMP_NUM_THREADS": "1"}, timeout_s=600)
    print(handle.proc.pid, flush=True)
    time.sleep(600)
""")


def _group_members(pgid: int) -> list[psutil.Process]:
    """Live (not zombie) processes of process group ``pgid``."""
    out = []
    for p in psutil.process_iter(["status"]):
        try:
            if os.getpgid(p.pid) == pgid and p.info["status"] != psutil.STATUS_ZOMBIE:
                out.append(p)
        except (ProcessLookupError, psutil.Error):
            continue
    return out


def _wait_gone(pgid: int, timeout_s: float) -> list[psutil.Process]:
    deadline = time.monotonic() + timeout_s
    while (left := _group_members(pgid)) and time.monotonic() < deadline:
        time.sleep(0.2)
    return left


@pytest.mark.heavy  # a real server; test_sigterm_stops_a_tracked_group_fast_twin is its twin
def test_sigterm_to_the_launching_script_leaves_no_server_behind(tmp_path):
    stderr = open(tmp_path / "script.err", "w")
    script = subprocess.Popen([sys.executable, "-P", "-c", SCRIPT], stdout=subprocess.PIPE,
                              stderr=stderr, text=True)
    pgid = None
    try:
        line = script.stdout.readline()  # the server's pid (= its group), once it is healthy
        assert line.strip().isdigit(), (tmp_path / "script.err").read_text()[-3000:]
        pgid = int(line)
        assert _group_members(pgid), "the server should be running before the signal"
        script.send_signal(signal.SIGTERM)
        rc = script.wait(timeout=120)
        left = _wait_gone(pgid, timeout_s=10)
        assert not left, f"still running after SIGTERM: {[p.cmdline() for p in left]}"
        assert rc == 128 + signal.SIGTERM  # SystemExit(143): cleanup ran, then a clean exit
    finally:
        script.kill()
        script.wait()
        stderr.close()
        if pgid is not None and _group_members(pgid):
            os.killpg(pgid, signal.SIGKILL)  # a failed test must not leave a server either


FAKE_SERVER_SCRIPT = textwrap.dedent("""
    import subprocess, sys, time
    from pathlib import Path
    from sglang_pr.server.launcher import ServerHandle, _track

    # A stand-in server: a process group of two sleepers, tracked like launch() tracks one.
    proc = subprocess.Popen(["sh", "-c", "sleep 600 & sleep 600"], start_new_session=True)
    _track(ServerHandle(proc, "http://127.0.0.1:0", Path("/dev/null"), []))
    print(proc.pid, flush=True)
    time.sleep(600)
""")


def test_sigterm_stops_a_tracked_group_fast_twin(tmp_path):
    """The same path without SGLang (seconds instead of a server start)."""
    script = subprocess.Popen([sys.executable, "-P", "-c", FAKE_SERVER_SCRIPT],
                              stdout=subprocess.PIPE, text=True)
    pgid = None
    try:
        pgid = int(script.stdout.readline())
        assert _group_members(pgid)
        script.send_signal(signal.SIGTERM)
        assert script.wait(timeout=60) == 128 + signal.SIGTERM
        assert not _wait_gone(pgid, timeout_s=10)
    finally:
        script.kill()
        script.wait()
        if pgid is not None and _group_members(pgid):
            os.killpg(pgid, signal.SIGKILL)


HANDLER_SCRIPT = textwrap.dedent("""
    import signal, subprocess
    from pathlib import Path
    from sglang_pr.server.launcher import ServerHandle, _exit_on_signal, _track

    def ours():
        return signal.getsignal(signal.SIGTERM) is _exit_on_signal

    states = [ours()]
    handles = []
    for _ in range(2):
        proc = subprocess.Popen(["sleep", "600"], start_new_session=True)
        handles.append(ServerHandle(proc, "http://127.0.0.1:0", Path("/dev/null"), []))
        _track(handles[-1])
        states.append(ours())
    for h in handles:
        h.stop()
        states.append(ours())
    print(states, signal.getsignal(signal.SIGTERM) == signal.SIG_DFL,
          all(h.proc.returncode is not None for h in handles))
""")


def test_handlers_are_ours_only_while_a_server_runs():
    """Installed with the first server, restored when the last one stops (in a fresh process:
    this one may hold the suite's shared servers)."""
    res = subprocess.run([sys.executable, "-P", "-c", HANDLER_SCRIPT], capture_output=True,
                         text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.split() == ["[False,", "True,", "True,", "True,", "False]", "True", "True"]


def test_start_then_wait_names_the_module_that_died(tmp_path):
    """start() does not wait (several servers can come up at once); wait_healthy() reports a
    process that exits by the module it ran, with its log."""
    import pytest

    from sglang_pr.server.launcher import ServerStartError, start, wait_healthy

    handle = start(module=("sglang_pr.no_such_module",), log_path=tmp_path / "x.log")
    try:
        with pytest.raises(ServerStartError, match=r"^sglang_pr\.no_such_module exited with "
                                                   r"status 1; log .*x\.log"):
            wait_healthy(handle, timeout_s=60)
    finally:
        handle.stop()
    assert not handle.alive
