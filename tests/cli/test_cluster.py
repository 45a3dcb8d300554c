"""``sglang-pr cluster``: bad input is one line and exit 2, before any server starts.

No SGLang server runs here: a worker "without the plugin" is a tiny local HTTP server that
answers 404 to ``/sglang_pr/info`` (what SGLang without sglang_pr answers), and capacity is
checked against a given core list.
"""

from __future__ import annotations

import http.server
import json
import socket
import threading

import pytest

from sglang_pr.cli import main
from sglang_pr.server import cluster
from sglang_pr.server.cluster import ClusterError, check_capacity, router_argv, worker_envs


def _run(capsys, argv: list[str]) -> tuple[int, str]:
    code = main(["cluster", *argv])
    err = capsys.readouterr().err.strip()
    return code, err


class _Handler(http.server.BaseHTTPRequestHandler):
    """A bare SGLang-like worker: /v1/models answers, /sglang_pr/info does not exist."""

    def do_GET(self):  # noqa: N802 (http.server's name)
        if self.path == "/v1/models":
            body = json.dumps({"data": [{"id": "m"}]}).encode()
            self.send_response(200)
        else:
            body = b'{"detail":"Not Found"}'
            self.send_response(404)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def plain_worker():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_worker_without_the_plugin_is_one_line_naming_the_cause(capsys, plain_worker):
    code, err = _run(capsys, ["--worker-urls", plain_worker])
    assert code == 2 and len(err.splitlines()) == 1, err
    assert plain_worker in err and "sglang_pr plugin is not loaded" in err
    assert "/sglang_pr/info -> HTTP 404" in err


def test_unreachable_worker_is_named(capsys):
    with socket.socket() as s:  # a port nothing listens on (bound, never listening)
        s.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{s.getsockname()[1]}"
        code, err = _run(capsys, ["--worker-urls", url])
    assert code == 2 and f"worker {url}: not reachable" in err, err


def test_more_workers_than_cores_is_refused(capsys):
    code, err = _run(capsys, ["--workers", "100000"])
    assert code == 2 and len(err.splitlines()) == 1, err
    assert err.startswith("sglang-pr cluster: error: --workers 100000: 100000 ranks")
    assert "CPU core(s)" in err


@pytest.mark.parametrize("argv, named", [
    (["--workers", "0"], "--workers 0: must be at least 1"),
    (["--port", "70000"], "--port 70000: must be in 1..65535"),
    (["--router-args=--dp-aware"], "--dp-aware"),
    (["--router-args=--policy random"], "--router-args --policy"),
    (["--router-args", "'unclosed"], "--router-args:"),
    (["--worker-urls", "http://127.0.0.1:1", "--max-total-tokens", "4096"],
     "--max-total-tokens: worker flags apply to workers this command starts"),
])
def test_bad_arguments_exit_2_naming_the_flag(capsys, argv, named):
    code, err = _run(capsys, argv)
    assert code == 2 and named in err and len(err.splitlines()) == 1, err


def test_busy_router_port_is_refused(capsys):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        code, err = _run(capsys, ["--port", str(port)])
    assert code == 2 and f"--port {port}: already in use" in err, err


def test_unknown_policy_is_argparse_error(capsys):
    with pytest.raises(SystemExit) as e:
        main(["cluster", "--policy", "nope"])
    assert e.value.code == 2 and "--policy" in capsys.readouterr().err


def test_capacity_counts_ranks_of_every_worker():
    check_capacity(2, 1, gpu=False, cpus=[0, 1])
    with pytest.raises(ClusterError, match=r"--workers 2 x 2 ranks each: 4 ranks.* 2 CPU"):
        check_capacity(2, 2, gpu=False, cpus=[0, 1])


def test_each_worker_gets_its_own_cores(monkeypatch):
    for var in ("OMP_NUM_THREADS", cluster.BIND_ENV):
        monkeypatch.delenv(var, raising=False)
    envs = worker_envs(2, 1, gpu=False, cpus=[0, 1, 2, 3])
    assert [e[cluster.BIND_ENV] for e in envs] == ["0,1", "2,3"]
    assert {e["OMP_NUM_THREADS"] for e in envs} == {"1"}  # 3 spare cores // 2 ranks
    monkeypatch.setenv(cluster.BIND_ENV, "0|1")  # the user's binding stands
    assert all(cluster.BIND_ENV not in e for e in worker_envs(2, 1, gpu=False, cpus=[0, 1]))


def test_router_argv_plain_mode_with_defaults_the_user_can_override():
    argv = router_argv(["http://a:1", "http://b:2"], "cache_aware")
    assert argv[argv.index("--worker-urls") + 1:argv.index("--policy")] == \
        ["http://a:1", "http://b:2"]
    assert argv[argv.index("--retry-max-retries") + 1] == "1" and "--dp-aware" not in argv
    mine = router_argv(["http://a:1"], router_args=["--retry-max-retries", "3"])
    assert mine.count("--retry-max-retries") == 1 and mine[-1] == "3"
