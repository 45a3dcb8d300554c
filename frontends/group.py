"""Online DeepConf from a program: ``s += deepconf_group(s, "answer", budget=32, ...)``.

Sends the state's text so far as the prompt to ``POST /sglang_pr/deepconf/group`` on the
program's backend: the server forks it, runs warm-up, threshold, early stops and the consensus
stop, and answers with the voted answer. The returned expression appends that answer as variable
``name``; the group result (traces, totals, chosen trace text) is ``expr.result`` and variable
``f"{name}_group"``.
"""

from __future__ import annotations

from typing import Any, Optional

from sglang_pr.cli.client import GroupError, post_group
from sglang_pr.frontends.vote import VoteExpr

__all__ = ["GroupError", "deepconf_group"]


def deepconf_group(s, name: str, *, sampling_params: Optional[dict] = None,
                   timeout_s: float = 600.0, **deepconf: Any) -> VoteExpr:
    """Run a fork group on ``s``'s text so far; ``deepconf`` are DeepConfConfig fields."""
    executor = s.stream_executor
    backend = executor.backend
    base_url = getattr(backend, "base_url", None)
    if base_url is None:
        raise GroupError("deepconf_group needs an SGLang RuntimeEndpoint backend")
    result = post_group(base_url, s.text(), deepconf, sampling_params, timeout_s=timeout_s,
                        api_key=getattr(backend, "api_key", None))
    executor.set_var(f"{name}_group", result)
    return VoteExpr(name, result.get("answer"), result)
