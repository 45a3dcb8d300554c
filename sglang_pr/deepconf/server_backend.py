"""Binds :class:`~.group.GroupRun` to SGLang's tokenizer manager, in the server's main process.

Each trace is one ``GenerateReqInput`` sent with ``tokenizer_manager.generate_request`` — the
call ``/generate`` itself makes, without an HTTP round trip. The prompt is first prefilled once
with ``max_new_tokens=0`` (what SGLang does for ``n > 1``), so every branch reuses its KV from the
radix cache. Aborts go through ``tokenizer_manager.abort_request``, SGLang's own path: the
scheduler finishes the request and releases its KV.

Under data parallelism (``--dp-size N``) the whole group runs on one rank: the prefill picks it
(:func:`sglang_pr.server.dp.choose_rank`: the rank with the fewest of this process's branches in
flight, ties by a hash of the prompt; why, in that module) and every branch carries it as
``routed_dp_rank``, so the prompt is prefilled once and every branch reuses that rank's cache.
Aborts reach the branches wherever they run (SGLang's controller sends aborts to every rank).

Before a group starts, :func:`check_group_request` checks what the served model admits (token
ids and ``k`` within the vocabulary, SGLang's own ``SamplingParams`` rules), so a bad group is
one 400 naming the field instead of N branches that each fail (a 200 with empty traces), and
token ids outside the vocabulary never reach the model (they crash SGLang's scheduler).
Just before the prefill, :func:`check_group_capacity` refuses a group whose branches running
at once could not fit in one rank's KV pool (a group never spans ranks or workers): SGLang would
otherwise retract running branches, this group's and other groups', over and over.
"""

from __future__ import annotations

import asyncio
import copy
import random
import re
import uuid
from typing import Any, Awaitable, Optional, TypeVar

from sglang_pr.deepconf.config import (
    CUSTOM_PARAMS_KEY,
    ConfigError,
    DeepConfConfig,
    TraceSettings,
    parse_config,
)
from sglang_pr.server.dp import GROUP_RID_PREFIX, branch_running, choose_rank
from sglang_pr.server.guards import check_token_ids, check_top_k

T = TypeVar("T")
# How often a running group checks its client. SGLang's own per-request check fires only after a
# request has waited seconds, and would free one branch at a time while the group starts more.
DISCONNECT_POLL_S = 0.5
# Sampling params the group owns (only their neutral value, None or 1, is accepted): one sample
# per trace (the group's budget says how many), sampled rather than beam-searched.
RESERVED_SAMPLING = {"n": "use deepconf.budget", "beam_width": "a group samples its traces"}
# How SGLang words the refusal of a request whose client went away (tokenizer_manager.py): such a
# branch is an abort (the group is being cancelled), not a bad request.
_DISCONNECTED = "disconnected from the client side"
# SGLang errors that name no parameter, by their opening words -> the parameter they are about
_SGLANG_PHRASES = (("Requested token count exceeds", "max_new_tokens"), ("The input (", "prompt"))


class BranchRejected(ConfigError):
    """SGLang refused a branch as a bad request. ``field`` is the bare SGLang name
    (``max_new_tokens``, ``prompt``, or "" when unknown); each route maps it to its own."""


def sglang_error_field(message: str) -> str:
    """The parameter an SGLang ``ValueError`` is about: the first sampling parameter it names
    (``"max_new_tokens must be at least 0"``), else a known phrase's; "" when none."""
    from sglang.api.v1.api_types import SamplingParams as ApiSamplingParams

    names = sorted(ApiSamplingParams.__struct_fields__, key=len, reverse=True)
    named = re.search(r"\b(" + "|".join(names) + r")\b", message)  # the first one it names
    if named:
        return named.group(1)
    return next((f for start, f in _SGLANG_PHRASES if message.startswith(start)), "")


def _named_error(message: str, field: str) -> ConfigError:
    """``"<field>: <reason>"``, without repeating a bare name SGLang's message starts with."""
    bare = field.rsplit(".", 1)[-1]
    reason = message[len(bare) + 1:] if message.startswith(bare + " ") else message
    return ConfigError(f"{field}: {reason}", field)


def vocab_size(tokenizer_manager) -> int:
    return int(tokenizer_manager.model_config.vocab_size)


def check_k(k: int, vocab: int, field: str) -> None:
    """DeepConf's top-k cannot exceed the vocabulary it ranks."""
    if k > vocab:
        raise ConfigError(f"{field}: must be <= vocab size ({vocab}), got {k}", field)


def check_sampling_params(sp: dict, tokenizer_manager, prefix: str = "sampling_params",
                          contract: bool = True) -> None:
    """SGLang's own rules for one request's sampling params, each error naming its field: the
    JSON contract of ``/generate`` key by key (types, unknown keys; ``contract=False`` for
    params SGLang built itself, e.g. from an OpenAI request), then the runtime
    ``SamplingParams`` through ``normalize`` and ``verify`` (ranges, vocabulary)."""
    from sglang.api.v1.api_types import JsonContractError
    from sglang.api.v1.api_types import SamplingParams as ApiSamplingParams
    from sglang.srt.sampling.sampling_params import SamplingParams

    def name(key: str) -> str:
        return f"{prefix}.{key}" if prefix and key else (key or prefix)

    for key, value in sp.items() if contract else ():
        try:
            ApiSamplingParams.from_json_value({key: value})
        except JsonContractError as e:
            raise ConfigError(f"{name(key)}: {e}", name(key)) from None
        if key not in SamplingParams.__struct_fields__:  # in the contract, not the runtime
            raise ConfigError(f"{name(key)}: not supported here", name(key))
    check_top_k(sp.get("top_k"), name("top_k"))  # before SamplingParams: named with the prefix
    try:
        params = SamplingParams(**sp)  # reads sp, never changes it (no deep copy to make)
        params.normalize(tokenizer_manager.tokenizer)
        params.verify(vocab_size(tokenizer_manager))
    except ConfigError:
        raise
    except (ValueError, TypeError) as e:
        field = name(sglang_error_field(str(e)))
        raise (_named_error(str(e), field) if field else ConfigError(str(e), "")) from None


def check_group_request(prompt: dict, sp: dict, k: int, tokenizer_manager) -> None:
    """What every branch of a group would be refused for, checked once before any starts.
    ``prompt``: {"text": str} or {"input_ids": [int]}; ``sp`` the group's sampling params."""
    vocab = vocab_size(tokenizer_manager)
    check_k(k, vocab, "deepconf.k")
    if "input_ids" in prompt:
        check_token_ids(prompt["input_ids"], vocab, "input_ids")
    for key, why in RESERVED_SAMPLING.items():
        if sp.get(key) not in (None, 1):
            raise ConfigError(f"sampling_params.{key}: set by the group ({why})",
                              f"sampling_params.{key}")
    custom = sp.get("custom_params")
    if custom is not None and not isinstance(custom, dict):
        raise ConfigError("sampling_params.custom_params: must be an object",
                          "sampling_params.custom_params")
    # the group writes custom_params.deepconf into each branch; the rest is SGLang's to judge
    rest = {k_: v for k_, v in (custom or {}).items() if k_ != CUSTOM_PARAMS_KEY}
    check_sampling_params({**sp, "custom_params": rest or None}, tokenizer_manager)


def kv_capacity() -> Optional[int]:
    """Tokens one rank's KV pool holds (the scheduler's ``max_total_num_tokens``, reported to
    the main process at start-up; under DP every rank has the same pool); None if unknown."""
    try:
        from sglang.srt.entrypoints.http_server import get_global_state

        return int(get_global_state().scheduler_info["max_total_num_tokens"])
    except (ImportError, AttributeError, KeyError, TypeError, ValueError):
        return None


def check_group_capacity(cfg: DeepConfConfig, prompt_tokens: int,
                         max_new_tokens: Optional[int], capacity: Optional[int],
                         context_len: Optional[int] = None) -> None:
    """A group holds the prompt once plus up to ``min(budget, width)`` branches' own tokens at
    once, all on one rank; more than the rank's KV pool is refused (BranchRejected naming the
    field that sets how many run at once). Unknown sizes (no token limit: the branches may run
    to the context length) are left to SGLang, and so is one branch longer than the context
    (SGLang refuses it itself, naming ``max_new_tokens``: the group's size is not the cause)."""
    if capacity is None or max_new_tokens is None:
        return
    if context_len is not None and int(prompt_tokens) + int(max_new_tokens) > context_len:
        return
    at_once = min(cfg.budget, cfg.width)
    need = at_once * int(max_new_tokens) + int(prompt_tokens)
    if need <= capacity:
        return
    field = "deepconf.width" if cfg.width < cfg.budget else "deepconf.budget"
    # worded without SGLang's parameter names: the OpenAI route reads the field from those
    raise BranchRejected(
        f"{field}: {at_once} traces at once x {max_new_tokens} new tokens + {prompt_tokens} "
        f"prompt tokens = {need} KV tokens, more than one worker's KV pool holds ({capacity} "
        "tokens, --max-total-tokens); lower deepconf.budget or deepconf.width, or the "
        "token limit", field)


class TokenizerManagerBackend:
    """TraceBackend over an in-process TokenizerManager. ``config``: the group's settings, for
    the capacity check before the prefill (read from the request's ``deepconf`` body field
    when not given)."""

    def __init__(self, tokenizer_manager, prompt: dict[str, Any], request=None,
                 group_id: Optional[str] = None, config: Optional[DeepConfConfig] = None):
        self.config = config
        self.tm = tokenizer_manager
        # {"text": str} or {"input_ids": [int]}, plus "sampling_params" without the keys the
        # group owns (a neutral n=None would even fail SGLang's own parallel-sampling check)
        sp = {k: v for k, v in (prompt.get("sampling_params") or {}).items()
              if k not in RESERVED_SAMPLING}
        self.prompt = {**prompt, "sampling_params": sp}
        self.request = request  # fastapi Request (disconnect checks), or None
        self.group_id = group_id or uuid.uuid4().hex[:16]
        seed = sp.get("sampling_seed")
        # a given seed makes the whole group reproducible (where the server honours seeds)
        self.seed_base = int(seed) if seed is not None else random.getrandbits(31)
        self.dp_rank: Optional[int] = None  # the group's DP rank, chosen at prefill

    def rid(self, index: int | str) -> str:
        return f"{GROUP_RID_PREFIX}{self.group_id}-{index}"

    def _obj(self, rid: str, sampling_params: dict):
        from sglang.srt.managers.io_struct import GenerateReqInput

        kwargs = {k: copy.deepcopy(v) for k, v in self.prompt.items() if k in ("text", "input_ids")}
        return GenerateReqInput(rid=rid, sampling_params=sampling_params, stream=False,
                                routed_dp_rank=self.dp_rank, **kwargs)

    async def _one(self, obj) -> dict:
        try:
            return await self.tm.generate_request(obj, self.request).__anext__()
        except ValueError as e:
            if _DISCONNECTED in str(e):
                raise
            # SGLang refused the request itself (e.g. prompt plus max_new_tokens over the
            # context): every branch would be, so the whole group is a bad request.
            raise BranchRejected(str(e), sglang_error_field(str(e))) from None

    async def _group_config(self) -> Optional[DeepConfConfig]:
        if self.config is not None or self.request is None:
            return self.config
        try:  # the OpenAI routes: the body Starlette already parsed (and cached)
            raw = (await self.request.json()).get("deepconf")
            return None if raw is None else parse_config(raw)
        except (ValueError, AttributeError, ConfigError):
            return None

    def _prompt_tokens(self) -> int:
        if "input_ids" in self.prompt:
            return len(self.prompt["input_ids"])
        return len(self.tm.tokenizer.encode(self.prompt["text"]))

    async def check_capacity(self) -> None:
        """:func:`check_group_capacity` for this group (BranchRejected), before any KV is used."""
        cfg = await self._group_config()
        if cfg is None:
            return
        from sglang.srt.sampling.sampling_params import SamplingParams

        sp = self.prompt.get("sampling_params") or {}
        # absent: SGLang's default; present but None: up to the context length (unknown)
        max_new = sp["max_new_tokens"] if "max_new_tokens" in sp \
            else SamplingParams().max_new_tokens
        check_group_capacity(cfg, self._prompt_tokens(), max_new, kv_capacity(),
                             getattr(self.tm, "context_len", None))

    async def prefill(self) -> dict:
        await self.check_capacity()
        sp = dict(self.prompt.get("sampling_params") or {})
        sp["max_new_tokens"] = 0
        sp.pop("custom_params", None)
        sp.pop("min_new_tokens", None)  # > 0 would contradict max_new_tokens=0 in verify
        # chosen and counted before the first await, so groups starting together spread out
        self.dp_rank = choose_rank(self.tm, self.prompt)
        with branch_running(self.dp_rank):
            out = await self._one(self._obj(self.rid("prefill"), sp))
        return out.get("meta_info") or {}

    async def generate(self, index: int, settings: TraceSettings) -> dict:
        sp = copy.deepcopy(dict(self.prompt.get("sampling_params") or {}))
        custom = dict(sp.get("custom_params") or {})
        custom[CUSTOM_PARAMS_KEY] = settings.to_custom_params()
        sp["custom_params"] = custom
        # One seed per branch: under seeded sampling, equal seeds would give equal branches.
        sp["sampling_seed"] = (self.seed_base + index) % (2**63)
        try:
            with branch_running(self.dp_rank):
                return await self._one(self._obj(self.rid(index), sp))
        except BranchRejected:
            raise
        except ValueError as e:  # the client went away: the group is being cancelled
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
