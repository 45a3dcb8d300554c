"""Client side of ``POST /sglang_pr/deepconf/group``: one helper for the frontend's
``deepconf_group``, the demo and the benchmark."""

from __future__ import annotations

from typing import Any, Optional

import requests

from sglang_pr.deepconf.config import GROUP_PATH


class GroupError(RuntimeError):
    """The server refused or failed the group (the message names the field on a 400)."""


def post_group(
    base_url: str, text: str, deepconf: dict[str, Any], sampling_params: Optional[dict] = None,
    *, timeout_s: float = 600.0, api_key: Optional[str] = None,
) -> dict[str, Any]:
    """One fork group through a running server; returns the response JSON.

    Raises :class:`GroupError` with the server's message for any status but 200.
    """
    body = {"text": text, "sampling_params": dict(sampling_params or {}), "deepconf": deepconf}
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else None
    resp = requests.post(base_url + GROUP_PATH, json=body, timeout=timeout_s, headers=headers)
    if resp.status_code != 200:
        raise GroupError(f"{GROUP_PATH} -> HTTP {resp.status_code}: {resp.text[:500]}")
    return resp.json()
