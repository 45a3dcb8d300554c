"""HTTP routes sglang_pr adds to SGLang's own FastAPI app.

``GET /sglang_pr/info`` is the visible proof that the plugin ran in the server: version, the
features registered in this (main) process, the platform SGLang resolved, and each
subsystem's config in force (its ``info()``).
"""

from __future__ import annotations

from typing import Sequence

from fastapi import APIRouter

import sglang_pr
from sglang_pr.internals import patched_targets
from sglang_pr.server.kv_accounting import kv_by_rank

INFO_PATH = "/sglang_pr/info"


def _platform_name() -> str:
    from sglang.srt.platforms import current_platform

    return type(current_platform).__module__ + "." + type(current_platform).__name__


def info_router(subsystems: Sequence, features: list[str]) -> APIRouter:
    router = APIRouter()

    @router.get(INFO_PATH)
    async def sglang_pr_info() -> dict:
        from sglang.srt.entrypoints.http_server import get_global_state

        config = {m.__name__.rsplit(".", 1)[-1]: m.info() for m in subsystems
                  if hasattr(m, "info")}
        return {"name": "sglang_pr", "version": sglang_pr.__version__,
                "features": list(features), "platform": _platform_name(), "config": config,
                "patched_hooks": patched_targets(),  # this (main) process's
                # SGLang's own KV accounting, summed over the DP ranks, per rank in "ranks"
                "kv": await kv_by_rank(get_global_state().tokenizer_manager)}

    return router


def install_routes(app, subsystems: Sequence, features: list[str]) -> None:
    """Include the info route and every subsystem's routers in SGLang's app, once."""
    if getattr(app.state, "sglang_pr_routes", False):
        return
    app.state.sglang_pr_routes = True
    app.include_router(info_router(subsystems, features))
    for module in subsystems:
        for router in getattr(module, "routers", lambda: [])():
            app.include_router(router)
