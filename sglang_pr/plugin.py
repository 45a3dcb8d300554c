"""Entry point of group ``sglang.srt.plugins``: registers everything sglang_pr adds to SGLang.

SGLang calls ``register()`` in each of its processes (main/tokenizer manager, scheduler,
detokenizer) before it builds anything, then applies the hooks registered here.
``SGLANG_PLUGINS`` (a comma-separated whitelist of entry-point names) switches it off.

Each subsystem owns a module with ``register(features: list[str]) -> None`` that registers its
hooks, speculative algorithms or attention backends, and appends the feature names it enabled.
"""

from __future__ import annotations

import importlib
import logging
import os

from sglang.srt.plugins.hook_registry import HookRegistry, HookType

logger = logging.getLogger(__name__)

# Subsystem modules, registered in this order (one line each).
SUBSYSTEMS: tuple[str, ...] = (
    "sglang_pr.server.kv_accounting",
    "sglang_pr.cascade",
    "sglang_pr.deepconf.plugin",
    "sglang_pr.medusa.registration",
)

# Feature names registered in this process; /sglang_pr/info reports the main process's list.
FEATURES: list[str] = []


ENTRY_POINT_NAME = "sglang_pr"  # the name in pyproject's [project.entry-points."sglang.srt.plugins"]


def plugin_enabled() -> bool:
    """Whether SGLang will load this plugin: SGLANG_PLUGINS unset, or naming it (SGLang's rule)."""
    allowed = os.environ.get("SGLANG_PLUGINS", "")
    return not allowed or ENTRY_POINT_NAME in {x.strip() for x in allowed.split(",")}


def _install_http_routes(*args, **kwargs) -> None:
    # Runs in the main process just before SGLang launches its HTTP server (BEFORE hook on
    # launch_server), so the routes land on SGLang's own FastAPI app.
    from sglang.srt.entrypoints.http_server import app

    from sglang_pr.server.routes import install_routes

    install_routes(app)


def register() -> None:
    if FEATURES:  # SGLang guards against double loads too; keep register() idempotent anyway
        return
    HookRegistry.register(
        "sglang.srt.entrypoints.http_server.launch_server", _install_http_routes, HookType.BEFORE
    )
    FEATURES.append("http_routes")
    for name in SUBSYSTEMS:
        importlib.import_module(name).register(FEATURES)
    logger.info("sglang_pr plugin registered: %s", ", ".join(FEATURES))
