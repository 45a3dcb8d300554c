"""HTTP: ``POST /sglang_pr/deepconf/group`` — one prompt, a fork group, one voted answer.

Request body::

    {"text": "Q: 17 a*6 b+9\\nA:\\n",        # or "input_ids": [...]
     "sampling_params": {"temperature": 0.6, "top_p": 0.95, "max_new_tokens": 160},
     "deepconf": {"method": "deepconf_low", "budget": 64, "window": 16},   # DeepConfConfig
     "stream": false,                # true: server-sent events of group progress
     "return_confidences": false}    # per-token confidences in every trace

Response (``stream: false``): ``GroupResult`` — ``answer``, ``text`` (the most confident trace
that gave it), ``vote`` (scores, share), ``threshold``, ``traces`` (text, answer, confidences,
finish reason, tokens), ``totals`` (generated_tokens, traces_started, stopped_early, aborted,
consensus_reached, wall_s, ...). With ``stream: true`` each event is ``data: {json}``:
``{"event": "threshold" | "trace" | "done" | "error", ...}``.

Bad input → HTTP 400 ``{"error": {"message": "deepconf.tau: ...", "field": "deepconf.tau"}}``.
A client that disconnects cancels the group: every running branch is aborted and freed.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, StreamingResponse

from sglang_pr.deepconf.config import GROUP_PATH, ConfigError, DeepConfConfig, parse_config
from sglang_pr.deepconf.group import GroupRun
from sglang_pr.deepconf.server_backend import (
    RESERVED_SAMPLING,
    TokenizerManagerBackend,
    run_until_disconnect,
)

router = APIRouter()
PATH = GROUP_PATH
BODY_FIELDS = {"text", "input_ids", "sampling_params", "deepconf", "stream", "return_confidences"}


def info() -> dict:
    return {"route": PATH, "defaults": DeepConfConfig().model_dump()}


def bad_request(message: str, field: str) -> JSONResponse:
    return JSONResponse(status_code=400, content={"error": {"message": message, "field": field}})


def parse_group_body(body: Any) -> tuple[dict, DeepConfConfig]:
    """Validate a group request; raises ConfigError naming the field."""
    if not isinstance(body, dict):
        raise ConfigError("body: must be a JSON object", "body")
    unknown = sorted(set(body) - BODY_FIELDS)
    if unknown:
        raise ConfigError(f"{unknown[0]}: unknown field", unknown[0])
    has_text, has_ids = body.get("text") is not None, body.get("input_ids") is not None
    if has_text == has_ids:
        raise ConfigError("text: give exactly one of text or input_ids", "text")
    if has_text and not isinstance(body["text"], str):
        raise ConfigError("text: must be a single string (one prompt per group)", "text")
    if has_ids and not (isinstance(body["input_ids"], list) and body["input_ids"]
                        and all(isinstance(t, int) for t in body["input_ids"])):
        raise ConfigError("input_ids: must be a non-empty list of token ids", "input_ids")
    sp = body.get("sampling_params") or {}
    if not isinstance(sp, dict):
        raise ConfigError("sampling_params: must be an object", "sampling_params")
    for key in RESERVED_SAMPLING:
        if key in sp and sp[key] not in (None, 1):
            raise ConfigError(f"sampling_params.{key}: set by the group (use deepconf.budget)",
                              f"sampling_params.{key}")
    cfg = parse_config(body.get("deepconf") or {})
    prompt = {"text": body["text"]} if has_text else {"input_ids": body["input_ids"]}
    return {**prompt, "sampling_params": sp}, cfg


def tokenizer_manager():
    from sglang.srt.entrypoints.http_server import get_global_state

    return get_global_state().tokenizer_manager


@router.post(PATH)
async def deepconf_group(request: Request):
    try:
        body = await request.json()
    except (json.JSONDecodeError, ValueError):
        return bad_request("body: not valid JSON", "body")
    try:
        prompt, cfg = parse_group_body(body)
    except ConfigError as e:
        return bad_request(str(e), e.field)
    backend = TokenizerManagerBackend(tokenizer_manager(), prompt, request)
    return_confidences = bool(body.get("return_confidences"))
    if body.get("stream"):
        return StreamingResponse(_stream(cfg, backend, return_confidences),
                                 media_type="text/event-stream")
    group = GroupRun(cfg, backend, return_confidences=return_confidences)
    try:
        result = await run_until_disconnect(group.run(), request)
    except asyncio.CancelledError:
        return JSONResponse(status_code=499, content={"error": {"message": "client disconnected"}})
    except ValueError as e:  # e.g. SGLang rejected the sampling params at the prefill request
        return bad_request(str(e), "sampling_params")
    return JSONResponse(result.to_dict())


def _sse(event: dict) -> bytes:
    return b"data: " + json.dumps(event).encode() + b"\n\n"


async def _stream(cfg: DeepConfConfig, backend: TokenizerManagerBackend, return_confidences: bool):
    queue: asyncio.Queue = asyncio.Queue()
    group = GroupRun(cfg, backend, on_event=queue.put, return_confidences=return_confidences)

    async def run():
        try:
            result = await group.run()
            await queue.put({"event": "done", "result": result.to_dict()})
        except ValueError as e:
            await queue.put({"event": "error", "error": {"message": str(e)}})

    task = asyncio.ensure_future(run())
    try:
        while True:
            event = await queue.get()
            yield _sse(event)
            if event["event"] in ("done", "error"):
                break
        yield b"data: [DONE]\n\n"
    finally:  # the client went away (or we finished): nothing of the group may outlive it
        if not task.done():
            task.cancel()
