"""Binds :class:`~.group.GroupRun` to SGLang's tokenizer manager, in the server's main process.

Each trace is one ``GenerateReqInput`` sent with ``tokenizer_manager.generate_request`` — the
call ``/generate`` itself makes, without an HTTP round trip. The prompt is first prefilled once
with ``max_new_tokens=0`` (what SGLang does for ``n > 1``), so every branch reuses its KV from the
radix cache. Aborts go through ``tokenizer_manager.abort_request``, SGLang's own path: the
scheduler finishes the request and releases its KV.
"""

from __future__ import annotations

import asyncio
import copy
import random
import uuid
from typing import Any, Awaitable, Optional, TypeVar

from sglang_pr.deepconf.config import CUSTOM_PARAMS_KEY, TraceSettings

T = TypeVar("T")
# How often a running group checks its client. SGLang's own per-request check fires only after a
# request has waited seconds, and would free one branch at a time while the group starts more.
DISCONNECT_POLL_S = 0.5
# sampling params the group owns: one sample per trace, the DeepConf settings per trace
RESERVED_SAMPLING = ("n",)


class TokenizerManagerBackend:
    """TraceBackend over an in-process TokenizerManager."""

    def __init__(self, tokenizer_manager, prompt: dict[str, Any], request=None,
                 group_id: Optional[str] = None):
        self.tm = tokenizer_manager
        self.prompt = prompt  # {"text": str} or {"input_ids": [int]}, plus "sampling_params"
        self.request = request  # fastapi Request (disconnect checks), or None
        self.group_id = group_id or uuid.uuid4().hex[:16]
        seed = (prompt.get("sampling_params") or {}).get("sampling_seed")
        # a given seed makes the whole group reproducible (where the server honours seeds)
        self.seed_base = int(seed) if seed is not None else random.getrandbits(31)

    def rid(self, index: int) -> str:
        return f"dcg-{self.group_id}-{index}"

    def _obj(self, rid: str, sampling_params: dict):
        from sglang.srt.managers.io_struct import GenerateReqInput

        kwargs = {k: copy.deepcopy(v) for k, v in self.prompt.items() if k in ("text", "input_ids")}
        return GenerateReqInput(rid=rid, sampling_params=sampling_params, stream=False, **kwargs)

    async def _one(self, obj) -> dict:
        return await self.tm.generate_request(obj, self.request).__anext__()

    async def prefill(self) -> dict:
        sp = dict(self.prompt.get("sampling_params") or {})
        sp["max_new_tokens"] = 0
        sp.pop("custom_params", None)
        out = await self._one(self._obj(f"dcg-{self.group_id}-prefill", sp))
        return out.get("meta_info") or {}

    async def generate(self, index: int, settings: TraceSettings) -> dict:
        sp = copy.deepcopy(dict(self.prompt.get("sampling_params") or {}))
        custom = dict(sp.get("custom_params") or {})
        custom[CUSTOM_PARAMS_KEY] = settings.to_custom_params()
        sp["custom_params"] = custom
        # One seed per branch: under seeded sampling, equal seeds would give equal branches.
        sp["sampling_seed"] = (self.seed_base + index) % (2**63)
        try:
            return await self._one(self._obj(self.rid(index), sp))
        except ValueError as e:  # SGLang reports an aborted/disconnected request this way
            return {"text": "", "meta_info": {"finish_reason": {"type": "abort",
                                                                "message": str(e)}}}

    def abort(self, index: int) -> None:
        self.tm.abort_request(self.rid(index))


async def _watch_disconnect(request, task: asyncio.Task) -> None:
    while not task.done():
        if await request.is_disconnected():
            task.cancel()  # GroupRun.run aborts every running branch on cancellation
            return
        await asyncio.sleep(DISCONNECT_POLL_S)


async def run_until_disconnect(group: Awaitable[T], request) -> T:
    """Await a group; if the client (a Starlette ``Request``) goes away, cancel it at once.

    Cancelling :meth:`GroupRun.run` aborts every running branch through SGLang's abort path, so
    their KV is freed; the caller then gets ``asyncio.CancelledError``.
    """
    task = asyncio.ensure_future(group)
    if request is None:
        return await task
    watcher = asyncio.ensure_future(_watch_disconnect(request, task))
    try:
        return await task
    finally:
        watcher.cancel()
