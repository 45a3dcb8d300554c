"""HTTP: ``POST /sglang_pr/deepconf/group`` — one prompt, a fork group, one voted answer.

Request body (:class:`GroupRequest`, listed in SGLang's ``/openapi.json``)::

    {"text": "Q: 17 a*6 b+9\\nA:\\n",        # or "input_ids": [...]
     "sampling_params": {"temperature": 0.6, "top_p": 0.95, "max_new_tokens": 160},
     "deepconf": {"method": "deepconf_low", "budget": 64, "window": 16},   # DeepConfConfig
     "stream": false,                # true: server-sent events of group progress
     "return_confidences": false}    # per-token confidences in every trace

Seeds: ``sampling_params.sampling_seed`` = s gives branch i the seed s + i (the prefill has s),
so a group is reproducible where the server honours seeds (SGLang's deterministic mode, or
``SGLANG_PR_SEEDED_SAMPLING=1``); without it the group draws a random base.

Response (``stream: false``): ``GroupResult`` — ``answer``, ``text`` (the most confident trace
that gave it), ``vote`` (scores, share), ``threshold``, ``traces`` (text, answer, confidences,
finish reason, tokens), ``totals`` (generated_tokens, traces_started, stopped_early, aborted,
consensus_reached, wall_s, ...). With ``stream: true`` each event is ``data: {json}``:
``{"event": "threshold" | "trace" | "done" | "error", ...}``.

Bad input → HTTP 400 ``{"error": {"message": "deepconf.tau: ...", "field": "deepconf.tau"}}``,
before any branch starts: the body's own fields, the group config within this server's limits
(``SGLANG_PR_DEEPCONF_LIMITS``, reported by ``/sglang_pr/info``), and what the served model
admits (token ids and ``deepconf.k`` within its vocabulary, SGLang's sampling-param rules).
The body is parsed here from the declared model, not by FastAPI, so no 422 leaks out.
A client that disconnects cancels the group: every running branch is aborted and freed.
"""

from __future__ import annotations

import asyncio
import json
import math
from typing import Any, Optional

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr, model_validator

from sglang_pr.deepconf.config import (
    GROUP_PATH,
    LIMITS_ENV,
    ConfigError,
    DeepConfConfig,
    parse_config,
    server_limits,
)
from sglang_pr.deepconf.group import GroupRun
from sglang_pr.deepconf.server_backend import (
    BranchRejected,
    TokenizerManagerBackend,
    check_group_request,
    run_until_disconnect,
)
from sglang_pr.validation import field_error, parse_model

router = APIRouter()
PATH = GROUP_PATH
MAX_DEPTH = 32  # JSON nesting a group body may have (sampling_params.custom_params included)


class GroupRequest(BaseModel):
    """The group route's body. Strict types: a number is not a prompt, "yes" is not true."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    text: Optional[StrictStr] = Field(None, description="the prompt (or give input_ids)")
    input_ids: Optional[list[StrictInt]] = Field(None, min_length=1,
                                                 description="the prompt as token ids")
    sampling_params: Optional[dict[str, Any]] = Field(
        None, description="SGLang sampling params for every branch (n is the group's); "
                          "sampling_seed = s seeds branch i with s + i")
    deepconf: Optional[DeepConfConfig] = Field(None, description="the group's settings")
    stream: Optional[StrictBool] = Field(False, description="server-sent progress events")
    return_confidences: Optional[StrictBool] = Field(
        False, description="per-token confidences in every trace")

    @model_validator(mode="after")
    def _one_prompt(self) -> "GroupRequest":
        if (self.text is None) == (self.input_ids is None):
            raise field_error("text", "give exactly one of text or input_ids")
        return self


def _inline_refs(schema: dict) -> dict:
    """The model's JSON schema with its ``$defs`` inlined: an operation's schema in
    ``openapi.json`` cannot point at ``#/$defs`` (that would be the document's root)."""
    defs = schema.pop("$defs", {})

    def walk(x: Any) -> Any:
        if isinstance(x, dict):
            if "$ref" in x:
                return walk(defs[x["$ref"].rsplit("/", 1)[-1]])
            return {k: walk(v) for k, v in x.items()}
        return [walk(v) for v in x] if isinstance(x, list) else x

    return walk(schema)


_OPENAPI = {"requestBody": {"required": True, "content": {"application/json": {
    "schema": _inline_refs(GroupRequest.model_json_schema())}}}}


def info() -> dict:
    return {"route": PATH, "defaults": DeepConfConfig().model_dump(),
            "limits": server_limits().model_dump(), "limits_env": LIMITS_ENV}


def bad_request(message: str, field: str) -> JSONResponse:
    return JSONResponse(status_code=400, content={"error": {"message": message, "field": field}})


def _key(k: Any) -> str:  # a key as it can be shown (a lone surrogate escaped)
    return str(k).encode("utf-8", "backslashreplace").decode("utf-8")


def _bad_json_value(body: Any) -> Optional[ConfigError]:
    """The first string (key or value) holding a lone surrogate, which Python's JSON parser
    lets through and the tokenizer (and any UTF-8 encoder) then fails on; or nesting deeper
    than :data:`MAX_DEPTH`, which would exhaust the stack of whatever walks it next. Iterative:
    the walk itself must not run out of stack."""
    todo: list[tuple[Any, str, int]] = [(body, "", 0)]
    while todo:
        x, path, depth = todo.pop()
        if depth > MAX_DEPTH:
            return ConfigError(f"{path}: nested deeper than {MAX_DEPTH} levels", path)
        if isinstance(x, str):
            try:
                x.encode("utf-8")
            except UnicodeEncodeError:
                return ConfigError(f"{path or 'body'}: not valid Unicode (a lone surrogate)",
                                   path or "body")
            continue
        items = x.items() if isinstance(x, dict) else enumerate(x) if isinstance(x, list) else ()
        for key, value in reversed(list(items)):  # reversed: report the first one first
            sub = f"{path}.{_key(key)}" if path else _key(key)
            todo += [(value, sub, depth + 1)] + ([(key, sub, depth + 1)]
                                                 if isinstance(key, str) else [])
    return None


def parse_group_body(body: Any) -> tuple[dict, DeepConfConfig, GroupRequest]:
    """Validate a group request's own fields; raises ConfigError naming the field."""
    if not isinstance(body, dict):
        raise ConfigError("body: must be a JSON object", "body")
    bad = _bad_json_value(body)
    if bad is not None:
        raise bad
    # deepconf is parsed on its own so its errors read "deepconf.<field>" and the limits apply
    req = parse_model(GroupRequest, {k: v for k, v in body.items() if k != "deepconf"}, "")
    raw = body.get("deepconf")
    cfg = parse_config({} if raw is None else raw)
    prompt = {"text": req.text} if req.text is not None else {"input_ids": list(req.input_ids)}
    return {**prompt, "sampling_params": dict(req.sampling_params or {})}, cfg, req


def tokenizer_manager():
    from sglang.srt.entrypoints.http_server import get_global_state

    return get_global_state().tokenizer_manager


def _rejected_field(e: BranchRejected, prompt: dict) -> str:
    if e.field.startswith("deepconf."):  # the group's own settings (e.g. over KV capacity)
        return e.field
    if e.field == "prompt":
        return "text" if "text" in prompt else "input_ids"
    return f"sampling_params.{e.field}" if e.field else "sampling_params"


def _rejected_message(e: BranchRejected, field: str) -> str:
    return str(e) if str(e).startswith(field + ":") else f"{field}: {e}"


@router.post(PATH, openapi_extra=_OPENAPI, summary="Run a DeepConf / self-consistency group")
async def deepconf_group(request: Request):
    try:
        body = await request.json()
    except ValueError:  # JSONDecodeError, and UnicodeDecodeError for bytes that are not UTF-8
        return bad_request("body: not valid JSON", "body")
    except RecursionError:  # nested deeper than Python's JSON parser goes
        return bad_request("body: nested too deeply", "body")
    try:
        prompt, cfg, req = parse_group_body(body)
        tm = tokenizer_manager()
        check_group_request(prompt, prompt["sampling_params"], cfg.k, tm)
    except ConfigError as e:
        return bad_request(str(e), e.field)
    backend = TokenizerManagerBackend(tm, prompt, request, config=cfg)
    if req.stream:
        return StreamingResponse(_stream(cfg, backend, bool(req.return_confidences)),
                                 media_type="text/event-stream")
    group = GroupRun(cfg, backend, return_confidences=bool(req.return_confidences))
    try:
        result = await run_until_disconnect(group.run(), request)
    except asyncio.CancelledError:
        return JSONResponse(status_code=499, content={"error": {"message": "client disconnected"}})
    except BranchRejected as e:  # SGLang refused the branches (e.g. over the context length)
        field = _rejected_field(e, prompt)
        return bad_request(_rejected_message(e, field), field)
    except ValueError as e:
        return bad_request(f"sampling_params: {e}", "sampling_params")
    return _json(result.to_dict())


def _finite(x: Any) -> Any:
    """JSON has no NaN/Infinity: such a float becomes null."""
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if isinstance(x, dict):
        return {k: _finite(v) for k, v in x.items()}
    return [_finite(v) for v in x] if isinstance(x, (list, tuple)) else x


def _json(content: dict) -> JSONResponse:
    try:
        return JSONResponse(content)
    except ValueError:  # a non-finite float (Starlette renders with allow_nan=False)
        return JSONResponse(_finite(content))


def _sse(event: dict) -> bytes:
    return b"data: " + json.dumps(_finite(event)).encode() + b"\n\n"


async def _stream(cfg: DeepConfConfig, backend: TokenizerManagerBackend, return_confidences: bool):
    queue: asyncio.Queue = asyncio.Queue()
    group = GroupRun(cfg, backend, on_event=queue.put, return_confidences=return_confidences)

    async def run():
        try:
            result = await group.run()
            await queue.put({"event": "done", "result": result.to_dict()})
        except BranchRejected as e:
            field = _rejected_field(e, backend.prompt)
            await queue.put({"event": "error", "error": {"message": _rejected_message(e, field),
                                                         "field": field}})
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
