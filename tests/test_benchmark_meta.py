"""Result files record machine, versions, date and the reproducing command."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import sglang

from sglang_pr.benchmark_meta import command, run_metadata


def test_run_metadata_has_every_field_a_result_needs():
    meta = run_metadata(["benchmarks/x.py", "--n", "3"])
    assert set(meta) == {"machine", "versions", "date", "command"}
    assert meta["versions"]["sglang"] == sglang.__version__ == "0.5.23"
    assert meta["machine"]["cpu_count"] >= 1
    assert dt.datetime.fromisoformat(meta["date"]).tzinfo is not None


def test_command_quotes_arguments_so_it_can_be_pasted():
    assert command(["benchmarks/x.py", "--name", "a b"]) == "python benchmarks/x.py --name 'a b'"


BENCHMARKS = sorted((Path(__file__).resolve().parent.parent / "benchmarks").rglob("*.py"))


def test_benchmarks_start_servers_only_through_the_launcher():
    """The launcher stops its servers on exceptions, SIGINT and SIGTERM; a process started
    any other way would outlive a killed benchmark."""
    assert BENCHMARKS
    for path in BENCHMARKS:
        text = path.read_text()
        assert "subprocess" not in text and "os.system" not in text, path
        if "launch(" in text:
            assert "from sglang_pr.server.launcher import" in text, path


def test_benchmarks_check_their_plot_dependency_before_any_work():
    for path in BENCHMARKS:
        text = path.read_text()
        if "import matplotlib" in text:
            assert "require_or_exit(" in text, f"{path}: matplotlib is not checked at start-up"
