"""Optional dependencies (the extras of pyproject.toml): one line naming what to install.

Code that needs a module outside the core dependencies asks for it with :func:`require`
instead of importing it, so a missing one reads ``matplotlib is needed for the plot: pip
install -e ".[bench]"`` rather than a traceback. Scripts check everything they will need at
start-up with :func:`require_or_exit`, before any work: a benchmark must not run for an hour
and then fail to draw its plot.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Iterable
from pathlib import Path
from types import ModuleType


class MissingDependency(ImportError):
    """An optional module is not installed; ``str()`` names it, its use and the extra."""


def require(module: str, extra: str, needed_for: str) -> ModuleType:
    """Import ``module`` (from the ``extra`` extra, needed for ``needed_for``) or raise
    :class:`MissingDependency` with the one-line install hint."""
    try:
        return importlib.import_module(module)
    except ImportError:
        top = module.split(".")[0]
        raise MissingDependency(
            f'{top} is needed for {needed_for}: pip install -e ".[{extra}]"'
        ) from None


def require_or_exit(needs: Iterable[tuple[str, str, str]]) -> None:
    """For a script's start-up: each ``(module, extra, needed_for)`` is importable, or one line
    ``<script>: error: ...`` goes to stderr and the script exits with status 2."""
    for module, extra, needed_for in needs:
        try:
            require(module, extra, needed_for)
        except MissingDependency as e:
            print(f"{Path(sys.argv[0]).name}: error: {e}", file=sys.stderr)
            raise SystemExit(2) from None
