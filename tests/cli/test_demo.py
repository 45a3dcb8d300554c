"""``sglang-pr demo``: the README's main job, end to end."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from sglang_pr.cli import main
from sglang_pr.cli.demo import DEFAULT_METHOD, QuestionResult, summarize
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
    # self-consistency and the default DeepConf method side by side: one row each, same budget
    m = DEFAULT_METHOD
    rows = {x.group(1): x.group(2) for x in
            re.finditer(rf"^(sc|{m})\s+(\d+)\s+\d\.\d{{3}}\s+\d+", out, re.M)}
    assert rows == {"sc": "32", m: "32"}, out
    assert re.search(rf"^{m} - sc accuracy at equal N \(32 traces\): [+-]\d\.\d{{3}} "
                     r"\(paired 95 % interval [+-]\d\.\d{3} \.\. [+-]\d\.\d{3} over 3 questions",
                     out, re.M), out
    # and at equal tokens: SC's curve from its own traces at DeepConf's spend
    assert re.search(rf"^{m} - sc at equal tokens \(\d+ tokens/question = SC at "
                     r"N=\d+\.\d, accuracy \d\.\d{3}\): [+-]\d\.\d{3} \(paired 95 % interval "
                     r"[+-]\d\.\d{3} \.\. [+-]\d\.\d{3}\)$|^" + m + r" at \d+ tokens/question: "
                     r"outside", out, re.M), out


def test_demo_rejects_bad_input(tmp_path, capsys):
    assert main(["demo", "--n", "0"]) == 2
    assert main(["demo", "--seed", "-1"]) == 2
    assert main(["demo", "--budget", "0"]) == 2
    assert main(["demo", "--questions", "-1"]) == 2
    # a dataset too small for --questions, a missing one, an unknown model: one line, exit 2,
    # before any server starts
    data = tmp_path / "d.jsonl"
    data.write_text('{"question": "1+1?", "answer": 2}\n')
    capsys.readouterr()
    assert main(["demo", "--dataset", str(data), "--questions", "5"]) == 2
    assert "--questions:" in capsys.readouterr().err
    assert main(["demo", "--dataset", str(tmp_path / "none.jsonl")]) == 2
    assert "--dataset:" in capsys.readouterr().err
    assert main(["demo", "--model-path", "no-such-model"]) == 2
    assert "--model-path:" in capsys.readouterr().err


def test_demo_questions_are_disjoint_from_the_frontier_tuning_split():
    """The defaults were tuned on questions the demo never asks (issue 13)."""
    from sglang_pr.cli.side_by_side import demo_questions
    from sglang_pr.model import task

    demo = {q.prompt for q in demo_questions(40)}
    tuning = []
    taken = {p.prompt for p in task.heldout_set(1000)}
    for p in task.problems("heldout", seed=1):  # bench_frontier's tuning stream
        if len(tuning) == 150:
            break
        if p.prompt not in taken:
            taken.add(p.prompt)
            tuning.append(p.prompt)
    assert len(demo) == 40 and not demo & set(tuning)


def test_demo_questions_from_a_dataset_use_the_chat_template(tmp_path):
    from sglang_pr.cli.side_by_side import demo_questions
    from sglang_pr.data.prompts import format_prompts
    from sglang_pr.model import SHIPPED_MODEL_DIR

    data = tmp_path / "d.jsonl"
    data.write_text('{"question": "3 + 4", "answer": 7}\n{"question": "2 + 2", "answer": 4}\n')
    qs = demo_questions(2, str(data))
    assert [q.truth for q in qs] == ["7", "4"]
    assert [q.prompt for q in qs] == format_prompts(SHIPPED_MODEL_DIR, ["3 + 4", "2 + 2"])


@pytest.mark.server
@pytest.mark.heavy  # the README's first command runs exactly this; test_demo_against_running_server twins it
def test_demo_starts_and_stops_its_own_server():
    res = subprocess.run([sys.executable, "-P", "-m", "sglang_pr.cli", "demo", "--questions", "2",
                          "--n", "2", "--max-new-tokens", "48", "--budget", "4"],
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    assert "majority-vote accuracy" in res.stdout
    assert re.search(rf"^{DEFAULT_METHOD}\s+4\s", res.stdout, re.M), res.stdout
    pid_line = re.search(r"server up at http://127.0.0.1:(\d+)", res.stdout)
    assert pid_line, res.stdout
    # The server's port is free again: the demo stopped it.
    import socket
    with socket.socket() as s:
        # SO_REUSEADDR: the server's closed connections may sit in TIME_WAIT; a listener would
        # still make bind fail.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", int(pid_line.group(1))))
