"""Online DeepConf from a program: ``s += deepconf_group(s, "answer", budget=32, ...)``.

Sends the state's text so far as the prompt to ``POST /sglang_pr/deepconf/group`` on the
program's backend: the server forks it, runs warm-up, threshold, early stops and the consensus
stop, and answers with the voted answer. The returned expression appends that answer as variable
``name``; the group result (traces, totals, chosen trace text) is ``expr.result`` and variable
``f"{name}_group"``.
"""

from __future__ import annotations

from typing import Any, Optional

import requests

from sglang_pr.deepconf.config import GROUP_PATH
from sglang_pr.frontends.vote import VoteExpr



class GroupError(RuntimeError):
    """The server refused or failed the group (the message names the field on a 400)."""


def deepconf_group(s, name: str, *, sampling_params: Optional[dict] = None,
                   timeout_s: float = 600.0, **deepconf: Any) -> VoteExpr:
    """Run a fork group on ``s``'s text so far; ``deepconf`` are DeepConfConfig fields."""
    executor = s.stream_executor
    backend = executor.backend
    base_url = getattr(backend, "base_url", None)
    if base_url is None:
        raise GroupError("deepconf_group needs an SGLang RuntimeEndpoint backend")
    body = {"text": s.text(), "sampling_params": dict(sampling_params or {}),
            "deepconf": deepconf}
    resp = requests.post(base_url + GROUP_PATH, json=body, timeout=timeout_s,
                         headers={"Authorization": f"Bearer {backend.api_key}"}
                         if getattr(backend, "api_key", None) else None)
    if resp.status_code != 200:
        raise GroupError(f"{GROUP_PATH} -> HTTP {resp.status_code}: {resp.text[:500]}")
    result = resp.json()
    executor.set_var(f"{name}_group", result)
    return VoteExpr(name, result.get("answer"), result)
