"""HTTP routes sglang_pr adds to SGLang's own FastAPI app.

``GET /sglang_pr/info`` is the visible proof that the plugin ran in the server: version, the
features registered in this (main) process, the platform SGLang resolved, and each
subsystem's config in force.
"""

from __future__ import annotations

import importlib

from fastapi import APIRouter

import sglang_pr

# Modules exposing `router` (fastapi.APIRouter) and optionally `info() -> dict`.
ROUTER_MODULES: tuple[str, ...] = (
    "sglang_pr.deepconf.routes",
)

router = APIRouter()


def _platform_name() -> str:
    from sglang.srt.platforms import current_platform

    return type(current_platform).__module__ + "." + type(current_platform).__name__


@router.get("/sglang_pr/info")
async def sglang_pr_info() -> dict:
    from sglang_pr.plugin import FEATURES

    config = {}
    for name in ROUTER_MODULES:
        module = importlib.import_module(name)
        if hasattr(module, "info"):
            config[name.rsplit(".", 2)[-2]] = module.info()
    return {
        "name": "sglang_pr",
        "version": sglang_pr.__version__,
        "features": list(FEATURES),
        "platform": _platform_name(),
        "config": config,
    }


def install_routes(app) -> None:
    """Include every sglang_pr router in SGLang's app, once."""
    if getattr(app.state, "sglang_pr_routes", False):
        return
    app.state.sglang_pr_routes = True
    app.include_router(router)
    for name in ROUTER_MODULES:
        app.include_router(importlib.import_module(name).router)
