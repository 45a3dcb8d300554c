"""OpenAI-compatible group mode: ``/v1/completions`` and ``/v1/chat/completions`` with DeepConf.

An extra body field ``deepconf`` (a :class:`~.config.DeepConfConfig` object) turns the request
into a fork group; with the ``openai`` client::

    client.completions.create(model=m, prompt=p, max_tokens=160, temperature=0.6,
                              extra_body={"deepconf": {"method": "deepconf_low", "budget": 32}})

The response is an ordinary completion whose single choice is the most confident trace that
gave the voted answer; ``usage`` counts every branch (``completion_tokens`` = all branches'
generated tokens, the shared prompt once) and ``metadata["deepconf"]`` carries the voted
answer, vote, threshold, per-trace summaries and group totals. Bad settings → HTTP 400 naming
the field. Streaming and ``n > 1`` are refused with 400 in group mode. A client that hangs up
cancels the group: every running branch is aborted and its KV freed (as on the group route).

Hook: AROUND ``OpenAIServing{Completion,Chat}.handle_request``; requests without ``deepconf``
go to SGLang untouched. A single-trace early-stop threshold through ``custom_params`` is refused
(400) here because OpenAI's ``finish_reason`` cannot express ``low_confidence``; tracking
without a threshold passes through.
"""

from __future__ import annotations

import asyncio
import math
import uuid
from typing import Any, Optional

from sglang_pr.deepconf.config import (
    ConfigError,
    parse_config,
    parse_trace_settings,
    requested,
)
from sglang_pr.deepconf.group import GroupResult, GroupRun, most_confident
from sglang_pr.deepconf.server_backend import TokenizerManagerBackend, run_until_disconnect
from sglang_pr.internals import convert_openai_request

OPENAI_FINISH = ("stop", "length")


async def _body(raw_request) -> Optional[dict]:
    if raw_request is None:
        return None
    try:
        body = await raw_request.json()  # Starlette caches the parsed body
    except Exception:
        return None
    return body if isinstance(body, dict) else None


def _single_trace_error(body: dict) -> Optional[str]:
    raw = requested(body.get("custom_params"))
    if raw is None:
        return None
    try:
        settings = parse_trace_settings(raw)
    except ConfigError as e:
        return str(e)
    if settings.stops:
        return ("custom_params.deepconf.threshold: an early-stop threshold is not available on "
                "the OpenAI API (its finish_reason has no low_confidence); use the 'deepconf' "
                "extra body field for a group, or /generate for a single trace")
    return None


def _prompt_of(adapted) -> dict:
    text, ids = getattr(adapted, "text", None), getattr(adapted, "input_ids", None)
    if isinstance(text, str):
        return {"text": text}
    if isinstance(ids, list) and ids and isinstance(ids[0], int):
        return {"input_ids": ids}
    raise ConfigError("prompt: group mode takes exactly one prompt", "prompt")


def _group_request_error(request) -> Optional[str]:
    if getattr(request, "stream", False):
        return "stream: not supported with deepconf (use POST /sglang_pr/deepconf/group)"
    if (getattr(request, "n", 1) or 1) != 1:
        return "n: set by the group with deepconf (use deepconf.budget)"
    return None


async def _around_handle_request(original, serving, request, raw_request, *args, **kwargs):
    body = await _body(raw_request)
    if body is None or body.get("deepconf") is None:
        err = _single_trace_error(body) if body else None
        if err is not None:
            return serving.create_error_response(err, param="custom_params.deepconf")
        return await original(serving, request, raw_request, *args, **kwargs)
    try:
        cfg = parse_config(body["deepconf"])
        err = _group_request_error(request)
        if err is not None:
            raise ConfigError(err, err.split(":")[0])
        loop = asyncio.get_running_loop()
        adapted, _ = await loop.run_in_executor(
            None, convert_openai_request, serving, request, raw_request)
        prompt = _prompt_of(adapted)
    except ConfigError as e:
        return serving.create_error_response(str(e), param=e.field)
    except ValueError as e:
        return serving.create_error_response(str(e))
    backend = TokenizerManagerBackend(
        serving.tokenizer_manager, {**prompt, "sampling_params": adapted.sampling_params},
        raw_request)
    try:
        result = await run_until_disconnect(GroupRun(cfg, backend).run(), raw_request)
    except asyncio.CancelledError:  # the client went away: every branch was aborted and freed
        return serving.create_error_response("client disconnected", err_type="ClientClosed",
                                             status_code=499)
    except ValueError as e:
        return serving.create_error_response(str(e))
    return _response(serving, request, result)


def _finite(x: Any) -> Any:
    return None if isinstance(x, float) and not math.isfinite(x) else x


def group_metadata(result: GroupResult) -> dict:
    traces = [{"index": t.index, "phase": t.phase, "answer": t.answer, "tokens": t.tokens,
               "finish_reason": t.finish_type, "voted": t.voted, "confidence": t.confidence}
              for t in result.traces]
    return {"answer": result.answer, "vote": result.vote, "threshold": _finite(result.threshold),
            "totals": result.totals, "traces": traces}


def _chosen(result: GroupResult):
    """The trace whose text answers: the most confident voter for the answer, else any."""
    voters = [t for t in result.traces if t.voted and t.answer == result.answer]
    pool = voters or [t for t in result.traces if t.finish_type in OPENAI_FINISH] or result.traces
    return most_confident(pool)


def _response(serving, request, result: GroupResult):
    from sglang.srt.entrypoints.openai.protocol import UsageInfo

    chosen = _chosen(result)
    text = chosen.text if chosen is not None else ""
    finish = chosen.finish_type if chosen is not None and chosen.finish_type in OPENAI_FINISH \
        else "stop"
    prompt_tokens = int(result.totals.get("prompt_tokens") or 0)
    completion = int(result.totals["generated_tokens"])
    usage = UsageInfo(prompt_tokens=prompt_tokens, completion_tokens=completion,
                      total_tokens=prompt_tokens + completion)
    meta = {"deepconf": group_metadata(result)}
    model = getattr(request, "model", None) or "default"
    if type(serving).__name__ == "OpenAIServingChat":
        return _chat_response(model, text, finish, usage, meta)
    from sglang.srt.entrypoints.openai.protocol import CompletionResponse, CompletionResponseChoice

    return CompletionResponse(
        id=f"cmpl-{uuid.uuid4().hex}", model=model, usage=usage, metadata=meta,
        choices=[CompletionResponseChoice(index=0, text=text, finish_reason=finish)])


def _chat_response(model, text, finish, usage, meta):
    from sglang.srt.entrypoints.openai.protocol import (
        ChatCompletionResponse,
        ChatCompletionResponseChoice,
        ChatMessage,
    )

    return ChatCompletionResponse(
        id=f"chatcmpl-{uuid.uuid4().hex}", model=model, usage=usage, metadata=meta,
        choices=[ChatCompletionResponseChoice(
            index=0, message=ChatMessage(role="assistant", content=text), finish_reason=finish)])
