"""The group client against servers that are down, refuse, or stall (no SGLang server)."""

import http.server
import socket
import threading
import time

import pytest

from sglang_pr.cli import CliError, main
from sglang_pr.cli.client import GroupError, post_group


def _closed_port() -> int:
    with socket.socket() as s:  # bound then closed: nothing listens there
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_stopped_server_is_one_line_naming_the_url():
    url = f"http://127.0.0.1:{_closed_port()}"
    start = time.monotonic()
    with pytest.raises(GroupError) as ei:
        post_group(url, "Q: 1 a+1\nA:\n", {"method": "sc", "budget": 2}, timeout_s=30)
    msg = str(ei.value)
    assert time.monotonic() - start < 5  # refused at once, no hang
    assert url in msg and "\n" not in msg and "is the server running" in msg
    assert ei.value.__cause__ is None and ei.value.__suppress_context__  # no chained traceback
    assert isinstance(ei.value, CliError)  # the CLI prints it as one line, exit status 2


class _Handler(http.server.BaseHTTPRequestHandler):
    status, body, delay = 400, b'{"error": {"message": "deepconf.tau: bad\\nsecond line"}}', 0.0

    def do_POST(self):
        self.rfile.read(int(self.headers["Content-Length"]))
        time.sleep(self.delay)
        self.send_response(self.status)
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        try:
            self.wfile.write(self.body)
        except BrokenPipeError:  # the stalled-server test's client has given up already
            pass

    def log_message(self, *args):
        pass


@pytest.fixture
def fake_server():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", _Handler
    server.shutdown()
    server.server_close()
    _Handler.status, _Handler.delay = 400, 0.0


def test_refusal_keeps_the_field_on_one_line(fake_server):
    url, _ = fake_server
    with pytest.raises(GroupError, match=r"HTTP 400: .*deepconf\.tau") as ei:
        post_group(url, "p", {"tau": 7})
    assert "\n" not in str(ei.value)


def test_a_stalled_server_times_out_naming_the_url(fake_server):
    url, handler = fake_server
    handler.status, handler.delay = 200, 3.0
    with pytest.raises(GroupError, match=r"no answer within 0\.5 s") as ei:
        post_group(url, "p", {}, timeout_s=0.5)
    assert url in str(ei.value)


def test_cli_prints_a_group_error_as_one_line(monkeypatch, capsys):
    import sglang_pr.cli as cli

    def fail(args, extra):
        post_group(f"http://127.0.0.1:{_closed_port()}", "p", {})

    class Args:
        command, func, accepts_extra = "demo", staticmethod(fail), True

    class Parser:
        def parse_known_args(self, argv):
            return Args(), []

    monkeypatch.setattr(cli, "build_parser", lambda: Parser())
    assert main([]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("sglang-pr demo: error: cannot reach http://127.0.0.1:")
    assert "\n" not in err
