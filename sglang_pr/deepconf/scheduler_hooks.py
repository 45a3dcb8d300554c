"""Scheduler-process hooks: confidence per decode step, and the ``low_confidence`` finish.

Where each decision lands in SGLang's step (non-overlap and overlap schedules alike):

* ``ModelRunner.__init__`` (AFTER): install :class:`~.observer.DeepConfObserver` where the
  runner supports sampling observers (not on speculative/diffusion runners; those feed
  confidences through :func:`~.runtime_state.push_token_confidences` themselves).
* ``Scheduler.run_batch`` (AROUND) + ``SamplingBatchInfo.copy_for_forward`` (AFTER): attach
  the rows that opted in to the sampling info the forward uses.
* ``SchedulerBatchResultProcessor.process_batch_result_{prefill,decode}`` (BEFORE): hand each
  request the confidence of the token it is about to commit.
* ``Req.update_finish_state`` (AFTER): record the confidence, update the window, and finish the
  request with :class:`FinishLowConfidence` when its full window's mean is below the threshold.
  This runs inside the same result-processing step that appended the token, before SGLang's
  ``release_kv_cache`` for finished requests: the KV returns to the radix cache / free pool at
  once and no decode step is spent after the decision. A natural stop (EOS, stop string,
  length) in the same step wins: the trace is complete.
"""

from __future__ import annotations

import functools
import logging

from sglang.srt.managers.schedule_batch import BaseFinishReason
from sglang.srt.plugins.hook_registry import HookRegistry, HookType

from sglang_pr.deepconf.config import LOW_CONFIDENCE
from sglang_pr.deepconf.observer import PLAN_ATTR, DeepConfObserver, RowPlan, find_host_output
from sglang_pr.deepconf.runtime_state import STATE_ATTR, record_confidences, state_of

logger = logging.getLogger(__name__)

FINISH_TYPE = LOW_CONFIDENCE


class FinishLowConfidence(BaseFinishReason):
    """The trace's sliding-window confidence fell below its threshold (DeepConf early stop)."""

    def __init__(self, confidence: float, threshold: float, window: int, tokens: int):
        super().__init__()
        self.confidence, self.threshold = confidence, threshold
        self.window, self.tokens = window, tokens

    def to_json(self):
        return {"type": FINISH_TYPE, "confidence": self.confidence,
                "threshold": self.threshold, "window": self.window, "tokens": self.tokens}


def _guarded(fn):
    """A DeepConf failure must never take the scheduler down: log it, skip tracking."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except Exception:  # noqa: BLE001 - reported, then the step goes on untracked
            logger.exception("DeepConf hook %s failed; this step is not tracked", fn.__name__)
            return None

    return wrapper


def _install_observer(result, runner, *args, **kwargs) -> None:
    if not runner.supports_sampling_observer():
        return
    if runner.sampling_observer is not None:
        logger.warning("DeepConf: a sampling observer is already installed; not replacing it")
        return
    runner.sampling_observer = DeepConfObserver()


@_guarded
def _plan_rows(batch) -> None:
    info = getattr(batch, "sampling_info", None)
    if info is None:
        return
    reqs, rows, ks = [], [], []
    for i, req in enumerate(batch.reqs):
        st = state_of(req)
        if st is not None:
            reqs.append(req)
            rows.append(i)
            ks.append(st.settings.k)
    plan = RowPlan.build(reqs, rows, ks, len(batch.reqs), batch.device) if reqs else None
    setattr(info, PLAN_ATTR, plan)


def _around_run_batch(original, scheduler, batch, *args, **kwargs):
    if getattr(batch, "reqs", None) and batch.spec_algorithm.is_none():
        _plan_rows(batch)
    return original(scheduler, batch, *args, **kwargs)


def _after_copy_for_forward(result, info, *args, **kwargs) -> None:
    # dataclasses.replace drops non-field attributes; the forward copy needs the plan.
    setattr(result, PLAN_ATTR, getattr(info, PLAN_ATTR, None))


@_guarded
def _before_process_result(processor, batch, result, *args, **kwargs) -> None:
    host = find_host_output(getattr(result, "auxiliary_host_output", None))
    if host is None:
        return
    if result.copy_done is not None:  # the device-to-host copy may still be in flight
        result.copy_done.synchronize()
    for req, conf in host.per_request():
        st = getattr(req, STATE_ATTR, None)
        if st is not None:
            st.push(len(req.output_ids), (conf,))


@_guarded
def _after_update_finish_state(result, req, new_accepted_len: int = 1, *args, **kwargs) -> None:
    st = getattr(req, STATE_ATTR, None)
    if st is None or new_accepted_len <= 0:
        return
    start = len(req.output_ids) - new_accepted_len
    confs = st.take(start, new_accepted_len)
    if confs is None:
        return
    record_confidences(req, start, confs)
    if req.finished():
        return  # EOS / stop / length / abort this step: the trace ends on its own terms
    j = st.tracker.update(confs)
    if j is None:
        return
    req.finished_reason = FinishLowConfidence(
        confidence=float(st.tracker.stop_confidence), threshold=float(st.tracker.threshold),
        window=st.settings.window, tokens=start + j + 1)
    if j < new_accepted_len - 1:  # several tokens accepted in one step: cut after token j
        req.finished_len = start + j + 1


TARGETS = (
    ("sglang.srt.model_executor.model_runner.ModelRunner.__init__",
     _install_observer, HookType.AFTER),
    ("sglang.srt.managers.scheduler.Scheduler.run_batch", _around_run_batch, HookType.AROUND),
    ("sglang.srt.sampling.sampling_batch_info.SamplingBatchInfo.copy_for_forward",
     _after_copy_for_forward, HookType.AFTER),
    ("sglang.srt.managers.scheduler_components.batch_result_processor."
     "SchedulerBatchResultProcessor.process_batch_result_decode",
     _before_process_result, HookType.BEFORE),
    ("sglang.srt.managers.scheduler_components.batch_result_processor."
     "SchedulerBatchResultProcessor.process_batch_result_prefill",
     _before_process_result, HookType.BEFORE),
    ("sglang.srt.managers.schedule_batch.Req.update_finish_state",
     _after_update_finish_state, HookType.AFTER),
)


def register_hooks() -> None:
    for target, hook, kind in TARGETS:
        HookRegistry.register(target, hook, kind)

