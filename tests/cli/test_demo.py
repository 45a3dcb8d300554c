"""``sglang-pr demo``: the README's main job, end to end."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from sglang_pr.cli import main
from sglang_pr.cli.demo import QuestionResult, summarize
from sglang_pr.deepconf.config import SAMPLING


def test_vote_and_summary_arithmetic():
    results = [QuestionResult(5, (5, 5, 7, None), (10, 10, 10, 4)),
               QuestionResult(3, (1, 1, 3, 3), (5, 5, 5, 5))]
    assert results[0].voted == 5
    s = summarize(results)
    assert s["single_sample_accuracy"] == 4 / 8
    assert s["vote_accuracy"] == 0.5  # the 2-2 tie goes to 1, which reached 2 votes first
    assert s["generated_tokens"] == 54


def test_the_demo_vote_breaks_ties_like_the_sc_path():
    # 7 is seen first, but 3 reaches 2 votes first: the project's one tie rule picks 3
    assert QuestionResult(7, (7, 3, 3, 7), (1, 1, 1, 1)).voted == 3
    assert QuestionResult(7, (None, None), (1, 1)).voted is None


@pytest.mark.server
def test_demo_against_running_server(base_url, capsys):
    assert main(["demo", "--url", base_url, "--questions", "3", "--n", "4"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"single-sample accuracy : \d\.\d{3}", out)
    tokens = int(re.search(r"tokens generated\s+: (\d+)", out).group(1))
    assert 3 * 4 <= tokens <= 3 * 4 * SAMPLING.max_new_tokens
    # self-consistency and DeepConf-low side by side: one table row each, same budget
    rows = {m.group(1): m.group(2) for m in
            re.finditer(r"^(sc|deepconf_low)\s+(\d+)\s+\d\.\d{3}\s+\d+", out, re.M)}
    assert rows == {"sc": "32", "deepconf_low": "32"}, out
    assert re.search(r"^deepconf_low - sc accuracy: [+-]\d\.\d{3} \(paired 95 % interval "
                     r"[+-]\d\.\d{3} \.\. [+-]\d\.\d{3} over 3 questions", out, re.M), out


def test_demo_rejects_bad_input():
    assert main(["demo", "--n", "0"]) == 2
    assert main(["demo", "--budget", "0"]) == 2
    assert main(["demo", "--questions", "-1"]) == 2


@pytest.mark.server
def test_demo_starts_and_stops_its_own_server():
    res = subprocess.run([sys.executable, "-P", "-m", "sglang_pr.cli", "demo", "--questions", "2",
                          "--n", "2", "--max-new-tokens", "48", "--budget", "4"],
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    assert "majority-vote accuracy" in res.stdout
    assert re.search(r"^deepconf_low\s+4\s", res.stdout, re.M), res.stdout
    pid_line = re.search(r"server up at http://127.0.0.1:(\d+)", res.stdout)
    assert pid_line, res.stdout
    # The server's port is free again: the demo stopped it.
    import socket
    with socket.socket() as s:
        # SO_REUSEADDR: the server's closed connections may sit in TIME_WAIT; a listener would
        # still make bind fail.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", int(pid_line.group(1))))
