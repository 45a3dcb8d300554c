"""A missing optional module is one line naming the extra that installs it."""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from sglang_pr.optional import MissingDependency, require, require_or_exit

ROOT = Path(__file__).resolve().parent.parent
MISSING = "sglang_pr_no_such_module"


def test_require_returns_the_module():
    import json

    assert require("json", "bench", "the plot") is json


def test_missing_module_names_its_use_and_the_extra():
    with pytest.raises(MissingDependency) as e:
        require(f"{MISSING}.pyplot", "bench", "the plot")
    assert str(e.value) == f'{MISSING} is needed for the plot: pip install -e ".[bench]"'
    assert isinstance(e.value, ImportError)  # callers catching ImportError still do


def test_script_start_up_exits_2_with_one_line(capsys, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["benchmarks/bench_x.py"])
    with pytest.raises(SystemExit) as e:
        require_or_exit([("json", "bench", "JSON"), (MISSING, "bench", "the plot")])
    assert e.value.code == 2
    err = capsys.readouterr().err
    hint = f'{MISSING} is needed for the plot: pip install -e ".[bench]"'
    assert err == f"bench_x.py: error: {hint}\n"


def test_cli_prints_a_missing_extra_as_one_line(monkeypatch, capsys):
    import sglang_pr.cli.serve as serve
    from sglang_pr.cli import main

    def run(args, extra):
        require(MISSING, "bench", "the plot")

    monkeypatch.setattr(serve, "run", run)  # read by add_parser when main builds the parser
    assert main(["serve"]) == 2
    assert capsys.readouterr().err == \
        f'sglang-pr serve: error: {MISSING} is needed for the plot: pip install -e ".[bench]"\n'


def _triples(node: ast.AST) -> set[tuple[str, str]]:
    """(module, extra) of the ``(module, extra, needed_for)`` string tuples under ``node``."""
    return {(t.elts[0].value, t.elts[1].value) for t in ast.walk(node)
            if isinstance(t, ast.Tuple) and len(t.elts) == 3
            and all(isinstance(e, ast.Constant) and isinstance(e.value, str) for e in t.elts)}


def _name(node: ast.AST) -> str:
    return getattr(node, "id", None) or getattr(node, "attr", "")


def _require_calls() -> set[tuple[str, str]]:
    """(module, extra) of every require() call and start-up check (``NEEDS``/``needs`` lists,
    ``require_or_exit``) in the package and the benchmarks."""
    found = set()
    for path in [*(ROOT / "sglang_pr").rglob("*.py"), *(ROOT / "benchmarks").rglob("*.py")]:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and _name(node.func) == "require":
                args = [a.value for a in node.args[:2] if isinstance(a, ast.Constant)]
                found |= {tuple(args)} if len(args) == 2 else set()
            elif isinstance(node, ast.Call) and (
                    _name(node.func) == "require_or_exit"
                    or _name(node.func) == "append" and _name(node.func.value) == "needs"):
                found |= _triples(node)
            elif isinstance(node, ast.Assign) and any(
                    _name(t) in ("NEEDS", "needs") for t in node.targets):
                found |= _triples(node.value)
    return found


def test_every_named_extra_exists_and_installs_the_module():
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"]
    calls = _require_calls()
    assert {("matplotlib", "bench"), ("psutil", "bench")} <= calls  # the scan sees them
    for module, extra in calls:
        assert extra in extras, f"{module}: no extra {extra!r} in pyproject.toml"
        names = {re.split(r"[<>=!~\[ ;]", req)[0].lower() for req in extras[extra]}
        assert module.split(".")[0].lower() in names, f"{module} is not in the {extra} extra"


def test_a_benchmark_without_matplotlib_stops_before_any_work(tmp_path):
    # A stand-in `matplotlib` that fails to import, first on the path.
    (tmp_path / "matplotlib.py").write_text("raise ImportError('hidden for this test')\n")
    out = tmp_path / "medusa.json"
    res = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks/medusa/bench_medusa.py"), "--out", str(out)],
        capture_output=True, text=True, timeout=300,
        env={**os.environ, "PYTHONPATH": str(tmp_path)})
    assert res.returncode == 2, res.stderr[-2000:]
    assert res.stderr.strip().splitlines()[-1] == \
        'bench_medusa.py: error: matplotlib is needed for the plot: pip install -e ".[bench]"'
    assert not out.exists()
