"""Main-process hooks: validate per-request settings, and summarise each finished trace.

* ``SamplingParams.verify`` (AFTER): ``custom_params["deepconf"]`` is validated with
  :class:`~.config.TraceSettings` (``k`` also against the vocabulary ``verify`` was given) and
  normalised (defaults filled, −inf → None). A bad value raises
  ``ValueError("custom_params.deepconf.window: must be > 0")``, which SGLang's ``/generate``
  turns into HTTP 400 before anything reaches the scheduler.
* ``TokenizerManager.update_request_meta_info`` (AFTER; SGLang's documented place for
  terminal per-request metadata): when a DeepConf trace finishes, ``meta_info["deepconf"]``
  gets its summary (lowest group, bottom-10 %, tail, mean) computed from the per-token
  ``meta_info["deepconf_confidences"]`` the scheduler streamed. Requests that did not opt in
  never see either key, even when they shared a batch with ones that did.
"""

from __future__ import annotations

from typing import Any

from sglang_pr.deepconf.config import (
    CUSTOM_PARAMS_KEY,
    META_CONFIDENCES,
    META_SUMMARY,
    parse_trace_settings,
    requested,
)
from sglang_pr.deepconf.early_stop import settings_from_custom_params
from sglang_pr.deepconf.server_backend import check_k
from sglang_pr.deepconf.summary import summarize

PREFIX = "custom_params.deepconf"


def _after_verify(result, params, vocab_size=None, *args, **kwargs) -> None:
    raw = requested(params.custom_params)
    if raw is None:
        return
    settings = parse_trace_settings(raw, PREFIX)  # ConfigError is a ValueError -> HTTP 400
    if vocab_size is not None:  # a top-k over more tokens than exist has no meaning
        check_k(settings.k, int(vocab_size), f"{PREFIX}.k")
    params.custom_params = {**params.custom_params, CUSTOM_PARAMS_KEY: settings.to_custom_params()}


def _request_custom_params(obj) -> Any:
    sp = getattr(obj, "sampling_params", None)
    return sp.get("custom_params") if isinstance(sp, dict) else None


def _after_update_meta_info(result, manager, meta_info: dict, state, customized_info, index,
                            finish_reason, *args, **kwargs) -> None:
    if META_CONFIDENCES not in meta_info:
        return
    custom = _request_custom_params(state.obj)
    if requested(custom) is None:  # batched with DeepConf requests but did not opt in: hide it
        meta_info.pop(META_CONFIDENCES, None)
        state.customized_info_accumulated.pop(META_CONFIDENCES, None)
        state.customized_info_reported_keys.discard(META_CONFIDENCES)
        return
    # Runs on every streamed chunk: validate the settings only once, when the trace finishes.
    settings = settings_from_custom_params(custom) if finish_reason is not None else None
    if settings is not None:
        confs = [c for c in meta_info[META_CONFIDENCES] if c is not None]
        meta_info[META_SUMMARY] = summarize(confs, settings.window).to_dict()
