"""Client side of ``POST /sglang_pr/deepconf/group``: one helper for the frontend's
``deepconf_group``, the demo and the benchmark."""

from __future__ import annotations

from typing import Any, Optional

import requests

from sglang_pr.cli import CliError
from sglang_pr.deepconf.config import GROUP_PATH

# Seconds to open the connection: a server that is down refuses at once, but a host that drops
# packets would otherwise hold the caller for the whole (long) read timeout.
CONNECT_TIMEOUT_S = 10.0


class GroupError(CliError, RuntimeError):
    """The server refused, failed or could not be reached; one line naming the field (on a 400)
    or the URL (the CLI prints it as is, exit status 2)."""


def _unreachable(url: str, err: requests.RequestException, timeouts: tuple) -> GroupError:
    if isinstance(err, requests.ConnectTimeout):
        why = f"no connection within {timeouts[0]:g} s"
    elif isinstance(err, requests.ConnectionError):
        why = "connection refused or lost (is the server running?)"
    elif isinstance(err, requests.Timeout):
        why = f"no answer within {timeouts[1]:g} s"
    else:
        why = type(err).__name__
    return GroupError(f"cannot reach {url}: {why}")


def post_group(
    base_url: str, text: str, deepconf: dict[str, Any], sampling_params: Optional[dict] = None,
    *, timeout_s: float = 600.0, api_key: Optional[str] = None,
) -> dict[str, Any]:
    """One fork group through a running server; returns the response JSON.

    Raises :class:`GroupError` with the server's message for any status but 200, and with the
    URL when the server cannot be reached or does not answer in time.
    """
    url = base_url.rstrip("/") + GROUP_PATH
    body = {"text": text, "sampling_params": dict(sampling_params or {}), "deepconf": deepconf}
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else None
    timeouts = (min(CONNECT_TIMEOUT_S, timeout_s), timeout_s)  # (connect, read)
    try:
        resp = requests.post(url, json=body, timeout=timeouts, headers=headers)
    except requests.RequestException as e:
        raise _unreachable(url, e, timeouts) from None
    if resp.status_code != 200:
        detail = " ".join(resp.text[:500].split())  # one line, whatever the server sent
        raise GroupError(f"{url} -> HTTP {resp.status_code}: {detail}")
    try:
        return resp.json()
    except ValueError:
        raise GroupError(f"{url} -> HTTP 200 but not JSON: {resp.text[:200]!r}") from None
