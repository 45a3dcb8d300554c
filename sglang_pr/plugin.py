"""Entry point of group ``sglang.srt.plugins``: registers everything sglang_pr adds to SGLang.

SGLang calls ``register()`` in each of its processes (main/tokenizer manager, scheduler,
detokenizer) before it builds anything, then applies the hooks registered here.
``SGLANG_PLUGINS`` (a comma-separated whitelist of entry-point names) switches it off.

Each subsystem package is the one integration surface of its feature: ``register(features)``
(its hooks, spec algorithms, attention backends; appends the feature names it enabled), its
``HOOKS`` table (:class:`sglang_pr.internals.Hook` rows), and optionally ``routers()`` /
``info()`` for HTTP. This module lists the packages once and installs their routes.
"""

from __future__ import annotations

import importlib
import logging
import os

from sglang_pr.internals import Hook, register_hooks

logger = logging.getLogger(__name__)

# Subsystem packages, registered in this order (one line each).
SUBSYSTEMS: tuple[str, ...] = (
    "sglang_pr.server",
    "sglang_pr.cpu_platform",
    "sglang_pr.cascade",
    "sglang_pr.deepconf",
    "sglang_pr.medusa",
)

# The plugin's own row: routes go onto SGLang's app just before it launches the HTTP server.
HOOKS: tuple[Hook, ...] = (
    Hook("sglang.srt.entrypoints.http_server.launch_server",
         "sglang_pr.plugin:_install_http_routes", "before"),
)

# Feature names registered in this process; /sglang_pr/info reports the main process's list.
FEATURES: list[str] = []

ENTRY_POINT_NAME = "sglang_pr"  # the name in pyproject's [project.entry-points."sglang.srt.plugins"]


def plugin_enabled() -> bool:
    """Whether SGLang will load this plugin: SGLANG_PLUGINS unset, or naming it (SGLang's rule)."""
    allowed = os.environ.get("SGLANG_PLUGINS", "")
    return not allowed or ENTRY_POINT_NAME in {x.strip() for x in allowed.split(",")}


def subsystems() -> list:
    return [importlib.import_module(name) for name in SUBSYSTEMS]


def _install_http_routes(*args, **kwargs) -> None:
    from sglang.srt.entrypoints.http_server import app

    from sglang_pr.server.routes import install_routes

    install_routes(app, subsystems(), FEATURES)


def register() -> None:
    if FEATURES:  # SGLang guards against double loads too; keep register() idempotent anyway
        return
    register_hooks(HOOKS)
    FEATURES.append("http_routes")
    for module in subsystems():
        module.register(FEATURES)
    logger.info("sglang_pr plugin registered: %s", ", ".join(FEATURES))
