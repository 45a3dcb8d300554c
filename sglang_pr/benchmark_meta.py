"""What every benchmark result records beside its numbers: machine, versions, date, command.

One place for it, so the JSON files under ``benchmarks/results/`` stay comparable.
"""

from __future__ import annotations

import datetime as _dt
import os
import platform
import shlex
import sys

import torch


def machine() -> dict:
    """CPU/GPU model, core count, torch threads and the load average when the run started
    (a loaded 2-core box explains noisy timings)."""
    info = {"platform": platform.platform(), "python": platform.python_version(),
            "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads()}
    try:
        with open("/proc/cpuinfo") as f:
            info["cpu"] = next(ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name"))
        info["load_avg_at_start"] = os.getloadavg()
    except (OSError, StopIteration):
        pass
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
    return info


def versions() -> dict:
    """Versions of the stack that produced the numbers; a package that is not installed is
    left out (the GPU device machines run the kernel benchmark without sglang)."""
    import importlib

    import sglang_pr

    out = {"sglang_pr": sglang_pr.__version__, "torch": torch.__version__}
    for name in ("sglang", "transformers", "triton"):
        try:
            out[name] = importlib.import_module(name).__version__
        except ImportError:
            pass
    return dict(sorted(out.items()))


def now_iso() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def command(argv: list[str] | None = None) -> str:
    """The command line that reproduces the run, as typed from the repository root."""
    argv = sys.argv if argv is None else argv
    return shlex.join(["python", os.path.relpath(argv[0]) if argv else "?", *argv[1:]])


def run_metadata(argv: list[str] | None = None) -> dict:
    """``{"machine", "versions", "date", "command"}`` for a result file."""
    return {"machine": machine(), "versions": versions(), "date": now_iso(),
            "command": command(argv)}
