"""Result files record machine, versions, date and the reproducing command."""

from __future__ import annotations

import datetime as dt

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
