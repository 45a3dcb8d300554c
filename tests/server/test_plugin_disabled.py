"""SGLANG_PLUGINS whitelists plugins by entry-point name: without "sglang_pr" nothing is added.

The CPU platform (entry point "sglang_pr_cpu") stays whitelisted: it is what lets SGLang run on
this CPU at all, and is a separate entry point precisely so the plugin can be switched off alone.
"""

from __future__ import annotations

import requests

from sglang_pr.model import task
from sglang_pr.runtime_defaults import CPU_SERVER_DEFAULTS


def test_plugin_not_loaded_when_sglang_plugins_excludes_it(sglang_server_factory, request):
    server = sglang_server_factory("no_plugin", env={"SGLANG_PLUGINS": "sglang_pr_cpu"})
    request.addfinalizer(lambda: sglang_server_factory.release("no_plugin"))
    assert requests.get(server.base_url + "/sglang_pr/info", timeout=30).status_code == 404
    internal = requests.get(server.base_url + "/server_info", timeout=30).json()
    assert "sglang_pr_kv" not in internal["internal_states"][0]
    # serve still fills the CPU defaults; without the plugin there is no cascade to choose.
    for field in ("attention_backend", "sampling_backend", "max_total_tokens", "sleep_on_idle",
                  "disable_overlap_schedule"):
        assert internal[field] == CPU_SERVER_DEFAULTS[field], field
    out = requests.post(server.base_url + "/generate", timeout=120, json={
        "text": task.heldout_set(1)[0].prompt,
        "sampling_params": {"max_new_tokens": 4, "temperature": 0}}).json()
    assert out["meta_info"]["completion_tokens"] >= 1
