"""The server side shared by every subsystem: SGLang's KV accounting over HTTP, the info
route, and a launcher for SGLang server processes.

* ``kv_accounting`` SGLang's own KV numbers in ``/server_info`` (hook below) and the client
                    helpers tests and benchmarks use to assert "no leak";
* ``routes``        ``GET /sglang_pr/info`` and the installation of every subsystem's routes;
* ``launcher``      start/stop SGLang servers (tests, benchmarks, the demo).
"""

from __future__ import annotations

from sglang_pr.internals import Hook, register_hooks

HOOKS: tuple[Hook, ...] = (
    # The scheduler assembles /server_info's internal state here; we add its KV accounting.
    Hook("sglang.srt.managers.scheduler_components.internal_state."
         "SchedulerInternalStateController._add_memory_usage",
         "sglang_pr.server.kv_accounting:_add_kv_state", "after"),
)


def register(features: list[str]) -> None:
    register_hooks(HOOKS)
    features.append("kv_accounting")
