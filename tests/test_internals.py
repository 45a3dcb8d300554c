"""Every SGLang internal the plugin patches exists in the pinned SGLang, and is patched in a
served process (SGLang's HookRegistry only logs a missing target, so nothing else would fail)."""

from __future__ import annotations

import importlib.metadata
import inspect

import pytest
import requests

from sglang_pr import internals, plugin
from sglang_pr.internals import Hook


def all_rows() -> list[tuple[str, Hook]]:
    rows = [("sglang_pr.plugin", h) for h in plugin.HOOKS]
    for module in plugin.subsystems():
        rows += [(module.__name__, h) for h in module.HOOKS]
    return rows


def test_the_pinned_sglang_is_installed():
    assert importlib.metadata.version("sglang") == internals.SGLANG_VERSION


@pytest.mark.parametrize("owner,row", all_rows(), ids=lambda x: getattr(x, "target", x))
def test_every_hook_target_and_function_resolves(owner, row):
    target = row.resolve_target()  # raises on a renamed or removed SGLang name
    assert callable(target), row.target
    fn = row.resolve_hook()
    assert callable(fn) and fn.__module__.startswith("sglang_pr."), row.hook
    if row.kind == "around":  # SGLang passes the original first
        assert next(iter(inspect.signature(fn).parameters)) == "original", row.hook


def test_every_subsystem_has_one_integration_surface():
    for module in plugin.subsystems():
        assert callable(module.register), module.__name__
        assert isinstance(module.HOOKS, tuple), module.__name__
        assert (module.__doc__ or "").strip(), module.__name__


def test_a_missing_target_fails_resolution():
    with pytest.raises((ImportError, AttributeError)):
        Hook("sglang.srt.managers.scheduler.Scheduler.no_such_method", "x:y", "after") \
            .resolve_target()
    with pytest.raises(ValueError, match="kind"):
        Hook("a.b", "x:y", "replace")


def test_private_reach_ins_are_listed_where_the_pin_is_explained():
    doc = internals.__doc__
    for _, row in all_rows():
        private = [part for part in row.target.split(".") if part.startswith("_")
                   and not part.startswith("__")]
        for name in private:
            assert name in doc, f"{row.target}: private name not explained in internals.py"


@pytest.mark.server
def test_every_hook_took_effect_in_the_served_processes(base_url):
    info = requests.get(base_url + "/sglang_pr/info", timeout=30).json()
    state = requests.get(base_url + "/server_info", timeout=30).json()["internal_states"][0]
    wanted = {row.target for _, row in all_rows() if row.env is None}
    assert wanted <= set(info["patched_hooks"]), wanted - set(info["patched_hooks"])
    scheduler = set(state["sglang_pr_patched_hooks"])
    assert wanted <= scheduler, wanted - scheduler
    features = set(info["features"])
    assert {"http_routes", "kv_accounting", "cpu_hooks", "cascade_attention", "deepconf",
            "medusa"} <= features
