"""OpenAI-compatible group mode: ``/v1/completions`` and ``/v1/chat/completions`` with DeepConf.

An extra body field ``deepconf`` (a :class:`~.config.DeepConfConfig` object) turns the request
into a fork group; with the ``openai`` client::

    client.completions.create(model=m, prompt=p, max_tokens=160, temperature=0.6,
                              extra_body={"deepconf": {"method": "deepconf_low", "budget": 32}})

The response is an ordinary completion whose single choice is the most confident trace that
gave the voted answer; ``usage`` counts every branch (``completion_tokens`` = all branches'
generated tokens, the shared prompt once) and ``metadata["deepconf"]`` carries the voted
answer, vote, threshold, per-trace summaries and group totals. Bad settings → HTTP 400 naming
the field in ``param`` (OpenAI's spelling: ``max_tokens``, ``deepconf.k``), checked before any
branch starts: the group config within the server's limits, ``k`` and token ids within the
vocabulary, SGLang's own request checks and sampling-param rules. Streaming and ``n != 1`` are
refused with 400 in group mode. A client that hangs up cancels the group: every running branch
is aborted and its KV freed (as on the group route).

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
from sglang_pr.deepconf.server_backend import (
    BranchRejected,
    TokenizerManagerBackend,
    check_k,
    check_sampling_params,
    run_until_disconnect,
    sglang_error_field,
    vocab_size,
)
from sglang_pr.internals import convert_openai_request, validate_openai_request
from sglang_pr.server.guards import check_token_ids

OPENAI_FINISH = ("stop", "length")
# SGLang sampling params whose OpenAI name differs (what an error's ``param`` must say)
OPENAI_NAMES = {"max_new_tokens": "max_tokens"}


def _is_chat(serving) -> bool:
    return type(serving).__name__ == "OpenAIServingChat"


async def _body(raw_request) -> Optional[dict]:
    if raw_request is None:
        return None
    try:
        body = await raw_request.json()  # Starlette caches the parsed body
    except Exception:
        return None
    return body if isinstance(body, dict) else None


def _vocab(serving) -> int:
    return vocab_size(serving.tokenizer_manager)


def _single_trace_error(body: dict, serving) -> Optional[ConfigError]:
    raw = requested(body.get("custom_params"))
    if raw is None:
        return None
    try:
        settings = parse_trace_settings(raw)
        check_k(settings.k, _vocab(serving), "custom_params.deepconf.k")
    except ConfigError as e:
        return e
    if settings.stops:
        return ConfigError(
            "custom_params.deepconf.threshold: an early-stop threshold is not available on "
            "the OpenAI API (its finish_reason has no low_confidence); use the 'deepconf' "
            "extra body field for a group, or /generate for a single trace",
            "custom_params.deepconf.threshold")
    return None


def _prompt_name(serving) -> str:
    return "messages" if _is_chat(serving) else "prompt"


def _prompt_of(adapted, serving) -> dict:
    text, ids = getattr(adapted, "text", None), getattr(adapted, "input_ids", None)
    if isinstance(text, str):
        return {"text": text}
    if isinstance(ids, list) and ids and isinstance(ids[0], int):
        check_token_ids(ids, _vocab(serving), _prompt_name(serving))
        return {"input_ids": ids}
    name = _prompt_name(serving)
    raise ConfigError(f"{name}: group mode takes exactly one prompt", name)


def _group_request_error(request) -> Optional[ConfigError]:
    if getattr(request, "stream", False):
        return ConfigError("stream: not supported with deepconf (use POST "
                           "/sglang_pr/deepconf/group)", "stream")
    if getattr(request, "n", None) not in (None, 1):
        return ConfigError("n: set by the group with deepconf (use deepconf.budget)", "n")
    return None


def _openai_name(field: str, serving) -> str:
    """An SGLang sampling-param name as the OpenAI request spells it."""
    if field == "prompt":
        return _prompt_name(serving)
    return OPENAI_NAMES.get(field, field)


def _rename(e: ConfigError, serving) -> ConfigError:
    """``e`` (its message starts with its field, if it has one) with the field as OpenAI
    spells it."""
    if not e.field:
        return e
    name = _openai_name(e.field, serving)
    return ConfigError(name + str(e)[len(e.field):], name)


def _sglang_error(message: str, serving, default: Optional[str] = "prompt") -> ConfigError:
    """SGLang's own refusal, prefixed with the field it is about (else ``default``; these
    come from building the prompt, so by default it is the prompt or messages)."""
    field = sglang_error_field(message) or default
    if not field:
        return ConfigError(message, "")
    name = _openai_name(field, serving)
    return ConfigError(f"{name}: {message}", name)


def _sglang_request_error(serving, request) -> Optional[ConfigError]:
    """SGLang's own request checks, which its handle_request runs before converting (empty
    prompt or messages, an untrusted chat template, ...); without them an empty prompt list
    fails inside the conversion with an IndexError."""
    message = validate_openai_request(serving, request)
    return _sglang_error(message, serving) if message else None


async def _group_backend(serving, request, raw_request, body: dict):
    """The group's config and backend, every setting checked; raises ConfigError."""
    cfg = parse_config(body["deepconf"])
    check_k(cfg.k, _vocab(serving), "deepconf.k")
    err = _group_request_error(request) or _sglang_request_error(serving, request)
    if err is not None:
        raise err
    loop = asyncio.get_running_loop()
    try:
        adapted, _ = await loop.run_in_executor(
            None, convert_openai_request, serving, request, raw_request)
    except ValueError as e:  # SGLang's conversion (chat template, prompt) refused it
        raise _sglang_error(str(e), serving) from None
    prompt = _prompt_of(adapted, serving)
    sp = dict(adapted.sampling_params or {})
    try:  # SGLang built these from the request: its rules, the OpenAI names in the error
        check_sampling_params(sp, serving.tokenizer_manager, prefix="", contract=False)
    except ConfigError as e:
        raise _rename(e, serving) from None
    backend = TokenizerManagerBackend(
        serving.tokenizer_manager, {**prompt, "sampling_params": sp}, raw_request, config=cfg)
    return cfg, backend


async def _around_handle_request(original, serving, request, raw_request, *args, **kwargs):
    body = await _body(raw_request)
    if body is None or body.get("deepconf") is None:
        err = _single_trace_error(body, serving) if body else None
        if err is not None:
            return serving.create_error_response(str(err), param=err.field)
        return await original(serving, request, raw_request, *args, **kwargs)
    try:
        cfg, backend = await _group_backend(serving, request, raw_request, body)
    except ConfigError as e:
        return serving.create_error_response(str(e), param=e.field or None)
    try:
        result = await run_until_disconnect(GroupRun(cfg, backend).run(), raw_request)
    except asyncio.CancelledError:  # the client went away: every branch was aborted and freed
        return serving.create_error_response("client disconnected", err_type="ClientClosed",
                                             status_code=499)
    except BranchRejected as e:  # SGLang refused the branches (e.g. over the context length)
        if e.field.startswith("deepconf."):  # our own refusal (capacity): the field is named
            return serving.create_error_response(str(e), param=e.field)
        err = _sglang_error(str(e), serving, default=None)
        return serving.create_error_response(str(err), param=err.field or None)
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
    if _is_chat(serving):
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
