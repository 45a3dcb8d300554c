"""Online DeepConf from a program: ``s += deepconf_group(s, "answer", budget=32, ...)``.

Sends the state's text so far as the prompt to ``POST /sglang_pr/deepconf/group`` on the
program's backend: the server forks it, runs warm-up, threshold, early stops and the consensus
stop, and answers with the voted answer. The returned expression appends that answer as variable
``name``; the group result (traces, totals, chosen trace text) is ``expr.result`` and variable
``f"{name}_group"``.

Behind SGLang's router (smg), which forwards no plugin route (404 ``unknown_url``), the same group
goes through the router's ``/v1/completions`` with the ``deepconf`` body field instead
(:func:`sglang_pr.server.cluster.group_via_openai`): one request, so it still runs whole on one
worker. Its traces then carry summaries without their text.
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
    try:
        result = post_group(base_url, s.text(), deepconf, sampling_params, timeout_s=timeout_s,
                            api_key=getattr(backend, "api_key", None))
    except GroupError as e:
        if "unknown_url" not in str(e):  # a worker's own refusal: it names the field
            raise
        result = _group_through_router(base_url, s.text(), deepconf, sampling_params, timeout_s)
    executor.set_var(f"{name}_group", result)
    return VoteExpr(name, result.get("answer"), result)


def _group_through_router(base_url: str, text: str, deepconf: dict,
                          sampling_params: Optional[dict], timeout_s: float) -> dict:
    from sglang_pr.server.cluster import ClusterError, group_via_openai

    try:
        return group_via_openai(base_url, text, deepconf, sampling_params, timeout_s=timeout_s)
    except ClusterError as e:
        raise GroupError(str(e)) from None
