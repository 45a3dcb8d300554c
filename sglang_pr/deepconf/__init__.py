"""DeepConf: confidence-filtered, early-stopped self-consistency inside SGLang.

Concept -> file (pure parts first, SGLang-facing parts last):

* ``config``         every default (``DeepConfConfig`` for a group, ``TraceSettings`` for one
                     request), validation, error formatting, meta keys;
* ``confidence``     token confidence C = -mean top-k log-prob (natural log), batched torch;
* ``summary``        trace summaries (lowest group, bottom-10 %, tail, mean), the threshold;
* ``vote``           the one majority vote (plain and confidence-weighted) and trace filters;
* ``extract``        answer extraction; ``offline`` the offline Python API;
* ``group``          a fork group: warm-up, threshold, early stops, consensus;
* ``early_stop``     in the scheduler: C per decode step and the ``low_confidence`` finish;
* ``speculative``    the same for Medusa's verified tokens;
* ``tokenizer_hooks``, ``server_backend``, ``routes``, ``openai_hooks`` in the main process:
                     validation (400 naming the field), summaries, the group route, OpenAI.

Per request: ``sampling_params.custom_params = {"deepconf": {"k": 20, "window": 2048,
"threshold": s}}``; ``meta_info`` then has ``deepconf_confidences`` and ``deepconf``, and a
trace stopped early finishes with ``{"type": "low_confidence", ...}``.
"""

from __future__ import annotations

from sglang_pr.internals import Hook, register_hooks

_ES = "sglang_pr.deepconf.early_stop"
_OAI = "sglang_pr.deepconf.openai_hooks:_around_handle_request"

HOOKS: tuple[Hook, ...] = (
    # scheduler process: confidence per step, the low_confidence finish (early_stop.py)
    Hook("sglang.srt.model_executor.model_runner.ModelRunner.__init__",
         f"{_ES}:_install_observer", "after"),
    Hook("sglang.srt.managers.scheduler.Scheduler.run_batch", f"{_ES}:_around_run_batch",
         "around"),
    Hook("sglang.srt.sampling.sampling_batch_info.SamplingBatchInfo.copy_for_forward",
         f"{_ES}:_after_copy_for_forward", "after"),
    Hook("sglang.srt.managers.scheduler_components.batch_result_processor."
         "SchedulerBatchResultProcessor.process_batch_result_decode",
         f"{_ES}:_before_process_result", "before"),
    Hook("sglang.srt.managers.scheduler_components.batch_result_processor."
         "SchedulerBatchResultProcessor.process_batch_result_prefill",
         f"{_ES}:_before_process_result", "before"),
    Hook("sglang.srt.managers.schedule_batch.Req.update_finish_state",
         f"{_ES}:_after_update_finish_state", "after"),
    # main process: validation, per-trace summaries (tokenizer_hooks.py)
    Hook("sglang.srt.sampling.sampling_params.SamplingParams.verify",
         "sglang_pr.deepconf.tokenizer_hooks:_after_verify", "after"),
    Hook("sglang.srt.managers.tokenizer_manager.TokenizerManager.update_request_meta_info",
         "sglang_pr.deepconf.tokenizer_hooks:_after_update_meta_info", "after"),
    # main process: OpenAI extra_body={"deepconf": ...} (openai_hooks.py)
    Hook("sglang.srt.entrypoints.openai.serving_completions.OpenAIServingCompletion."
         "handle_request", _OAI, "around"),
    Hook("sglang.srt.entrypoints.openai.serving_chat.OpenAIServingChat.handle_request",
         _OAI, "around"),
)


def routers() -> list:
    """The APIRouters this subsystem adds to SGLang's app (main process)."""
    from sglang_pr.deepconf.routes import router

    return [router]


def info() -> dict:
    from sglang_pr.deepconf.routes import info as route_info

    return route_info()


def register(features: list[str]) -> None:
    register_hooks(HOOKS)
    features.append("deepconf")
