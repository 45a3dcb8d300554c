"""Packaging: every package directory is installed, entry points exist, no top-level `kernels`."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from importlib.metadata import entry_points
from pathlib import Path

import sglang_pr

ROOT = Path(__file__).resolve().parent.parent


def _declared() -> tuple[list[str], dict[str, str]]:
    cfg = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    return cfg["packages"], cfg["package-dir"]


def test_every_package_directory_is_listed():
    packages, package_dir = _declared()
    found = set()
    for pkg, rel in package_dir.items():
        for init in (ROOT / rel).rglob("__init__.py"):
            parts = init.parent.relative_to(ROOT / rel).parts
            found.add(".".join((pkg, *parts)) if parts else pkg)
    # A listed sub-package of a mapped directory is found through its parent's mapping.
    assert found == set(packages), f"pyproject packages out of sync: {found ^ set(packages)}"


def test_frontends_and_kernels_install_under_sglang_pr():
    import sglang_pr.frontends
    import sglang_pr.kernels

    assert Path(sglang_pr.frontends.__file__).parent == ROOT / "frontends"
    assert Path(sglang_pr.kernels.__file__).parent == ROOT / "kernels"


def test_top_level_kernels_is_not_ours(tmp_path):
    # SGLang depends on the PyPI package `kernels`; the installed sglang_pr must never shadow it.
    # -P and a neutral cwd: look at what is installed, not at this checkout's directory.
    res = subprocess.run([sys.executable, "-P", "-c", "import kernels; print(kernels.__file__)"],
                         capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert res.returncode == 0, res.stderr
    assert not Path(res.stdout.strip()).resolve().is_relative_to(ROOT)


def test_entry_points_are_registered():
    plugins = {ep.name: ep.value for ep in entry_points(group="sglang.srt.plugins")}
    platforms = {ep.name: ep.value for ep in entry_points(group="sglang.srt.platforms")}
    assert plugins.get("sglang_pr") == "sglang_pr.plugin:register"
    assert platforms.get("sglang_pr_cpu") == "sglang_pr.cpu_platform:activate"


def test_cpu_platform_stands_aside_on_gpu(monkeypatch):
    from sglang_pr import cpu_platform

    monkeypatch.setattr(cpu_platform, "has_accelerator", lambda: True)
    assert cpu_platform.activate() is None
    monkeypatch.setattr(cpu_platform, "has_accelerator", lambda: False)
    assert cpu_platform.activate() == cpu_platform.PLATFORM_QUALNAME


def test_version_is_single_sourced():
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert sglang_pr.__version__ == meta
