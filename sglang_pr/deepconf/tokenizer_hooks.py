"""Main-process hooks: validate per-request settings, and summarise each finished trace.

* ``SamplingParams.verify`` (AFTER): ``custom_params["deepconf"]`` is validated with
  :class:`~.config.TraceSettings` and normalised (defaults filled, −inf → None). A bad value
  raises ``ValueError("custom_params.deepconf.window: must be > 0")``, which SGLang's
  ``/generate`` turns into HTTP 400 before anything reaches the scheduler.
* ``TokenizerManager.update_request_meta_info`` (AFTER; SGLang's documented place for
  terminal per-request metadata): when a DeepConf trace finishes, ``meta_info["deepconf"]``
  gets its summary (lowest group, bottom-10 %, tail, mean) computed from the per-token
  ``meta_info["deepconf_confidences"]`` the scheduler streamed. Requests that did not opt in
  never see either key, even when they shared a batch with ones that did.
"""

from __future__ import annotations

from sglang.srt.plugins.hook_registry import HookRegistry, HookType

from sglang_pr.deepconf.config import CUSTOM_PARAMS_KEY, parse_trace_settings
from sglang_pr.deepconf.runtime_state import META_CONFIDENCES, META_SUMMARY
from sglang_pr.deepconf.summary import summarize


def _after_verify(result, params, *args, **kwargs) -> None:
    custom = params.custom_params
    if not isinstance(custom, dict) or CUSTOM_PARAMS_KEY not in custom:
        return
    raw = custom[CUSTOM_PARAMS_KEY]
    if raw is None or raw is False:
        return
    settings = parse_trace_settings(raw)  # ConfigError is a ValueError -> HTTP 400
    params.custom_params = {**custom, CUSTOM_PARAMS_KEY: settings.to_custom_params()}


def request_window(obj) -> int | None:
    """The DeepConf window of a GenerateReqInput's sampling params (None: not opted in)."""
    sp = getattr(obj, "sampling_params", None)
    custom = sp.get("custom_params") if isinstance(sp, dict) else None
    if not isinstance(custom, dict):
        return None
    raw = custom.get(CUSTOM_PARAMS_KEY)
    if raw is None or raw is False:
        return None
    try:
        return parse_trace_settings(raw).window
    except ValueError:
        return None


def _after_update_meta_info(result, manager, meta_info: dict, state, customized_info, index,
                            finish_reason, *args, **kwargs) -> None:
    if META_CONFIDENCES not in meta_info:
        return
    window = request_window(state.obj)
    if window is None:  # batched with DeepConf requests but did not opt in: hide the key
        meta_info.pop(META_CONFIDENCES, None)
        state.customized_info_accumulated.pop(META_CONFIDENCES, None)
        state.customized_info_reported_keys.discard(META_CONFIDENCES)
        return
    if finish_reason is not None:
        confs = [c for c in meta_info[META_CONFIDENCES] if c is not None]
        meta_info[META_SUMMARY] = summarize(confs, window).to_dict()


TARGETS = (
    ("sglang.srt.sampling.sampling_params.SamplingParams.verify", _after_verify, HookType.AFTER),
    ("sglang.srt.managers.tokenizer_manager.TokenizerManager.update_request_meta_info",
     _after_update_meta_info, HookType.AFTER),
)


def register_hooks() -> None:
    for target, hook, kind in TARGETS:
        HookRegistry.register(target, hook, kind)
