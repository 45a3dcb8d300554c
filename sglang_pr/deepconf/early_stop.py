"""DeepConf's early stop inside SGLang's scheduler: one mechanism, one module.

Per decode step, for the requests that opted in (``custom_params["deepconf"]``):

1. ``Scheduler.run_batch`` (AROUND) attaches a :class:`RowPlan` (which rows, which k) to the
   batch's ``SamplingBatchInfo``; ``copy_for_forward`` (AFTER) carries it to the forward copy.
2. ``ModelRunner.sample`` calls :class:`DeepConfObserver` (a SGLang ``SamplingObserver``,
   installed by the ``ModelRunner.__init__`` AFTER hook) with the logits after penalties and
   before temperature/top-p/top-k/grammar: token confidence C = -mean top-k log-prob, on the
   device, logits untouched. SGLang copies it to the host with the step's other results.
3. ``process_batch_result_{prefill,decode}`` (BEFORE) stashes each request's C on its
   :class:`TraceState` (speculative decoders call :func:`push_token_confidences` instead).
4. ``Req.update_finish_state`` (AFTER) feeds the :class:`ConfidenceTracker` window and, when
   the full window's mean is below the threshold, finishes the request with
   :class:`FinishLowConfidence`. This runs before SGLang's ``release_kv_cache`` for finished
   requests, so the KV goes back at once; a natural stop (EOS, stop string, length) in the same
   step wins. A failure in steps 3-4 is logged and leaves the step untracked (:func:`_guarded`).

Window rule (the reference vLLM processor's): the group confidence at token t is the mean of
the last ``window`` C's and is only compared with the threshold once the window is full. A
trace shorter than the window cannot stop online; offline it has one group, the mean of all its
tokens (:func:`sglang_pr.deepconf.summary.group_confidences`). Worked example (window 3,
threshold 1.0, C = 2, 2, 0.5, 0.2): t=3 mean 1.5 keeps going; t=4 mean 0.9 stops at token 4.

The hook rows are in ``sglang_pr.deepconf.HOOKS``; speculative decoders (Medusa) feed several
accepted tokens per step through :func:`push_token_confidences` before
``req.update_finish_state(n_accepted)``; tokens after the stop are cut (``finished_len``).
"""

from __future__ import annotations

import functools
import logging
import math
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Optional, Sequence, Union

import torch
from sglang.srt.managers.schedule_batch import BaseFinishReason

from sglang_pr.deepconf.confidence import topk_logprob_mean, topk_logprob_prefix_means
from sglang_pr.deepconf.config import (
    LOW_CONFIDENCE,
    META_CONFIDENCES,
    ConfigError,
    TraceSettings,
    parse_trace_settings,
    requested,
)

logger = logging.getLogger(__name__)

Confidences = Union[Sequence[float], torch.Tensor]


class ConfidenceTracker:
    """Sliding-window mean of token confidences with an early-stop threshold."""

    __slots__ = ("window", "threshold", "_buf", "_sum", "n_tokens", "lowest_group",
                 "stop_confidence", "stopped")

    def __init__(self, window: int, threshold: Optional[float] = None):
        if window <= 0:
            raise ValueError(f"window must be > 0, got {window}")
        self.window = int(window)
        self.threshold = -math.inf if threshold is None else float(threshold)
        self._buf: deque[float] = deque()
        self._sum = 0.0  # float64 running sum of _buf
        self.n_tokens = 0
        self.lowest_group = math.inf  # min over full windows seen so far
        self.stop_confidence: Optional[float] = None  # the group confidence at the stop
        self.stopped = False

    @property
    def current_group(self) -> Optional[float]:
        """Mean of the last ``window`` confidences (fewer while the window fills)."""
        return self._sum / len(self._buf) if self._buf else None

    @property
    def window_full(self) -> bool:
        return len(self._buf) >= self.window

    def update(self, confidences: Confidences) -> Optional[int]:
        """Feed accepted tokens' confidences in order; the index of the stop token or None."""
        values: Iterable[float] = (
            confidences.detach().reshape(-1).tolist()
            if isinstance(confidences, torch.Tensor) else confidences
        )
        for j, c in enumerate(values):
            if self.stopped:
                return j - 1  # defensive: nothing is accepted after a stop
            self._push(float(c))
            if not self.window_full:
                continue
            group = self._sum / self.window
            if group < self.lowest_group:
                self.lowest_group = group
            if group < self.threshold:
                self.stopped = True
                self.stop_confidence = group
                return j
        return None

    def _push(self, c: float) -> None:
        self._buf.append(c)
        self._sum += c
        self.n_tokens += 1
        if len(self._buf) > self.window:
            self._sum -= self._buf.popleft()
        if self.n_tokens % 4096 == 0:  # re-anchor the running sum against float drift
            self._sum = math.fsum(self._buf)


# Attribute on sglang's Req holding its TraceState (None: the request did not opt in).
STATE_ATTR = "_sglang_pr_deepconf"

_UNSET = object()


class TraceState:
    """Tracker plus the confidences waiting for this step's ``update_finish_state``."""

    __slots__ = ("settings", "tracker", "_pending_start", "_pending")

    def __init__(self, settings: TraceSettings):
        self.settings = settings
        self.tracker = ConfidenceTracker(settings.window, settings.threshold)
        self._pending_start = -1
        self._pending: list[float] = []

    def push(self, output_len_before: int, confs: Sequence[float]) -> None:
        """Stash the confidences of tokens that will land at ``output_ids[output_len_before:]``."""
        self._pending_start = output_len_before
        self._pending = list(confs)

    def take(self, start: int, n: int) -> Optional[list[float]]:
        """The stashed confidences for ``n`` new tokens starting at ``start``, if they match."""
        if self._pending_start != start or not self._pending:
            return None
        confs, self._pending, self._pending_start = self._pending[:n], [], -1
        return confs


def settings_from_custom_params(custom_params: Any) -> Optional[TraceSettings]:
    """The request's TraceSettings, or None when it did not opt in (or they are invalid)."""
    raw = requested(custom_params)
    if raw is None:
        return None
    try:
        return parse_trace_settings(raw)
    except ConfigError as e:  # the main process validates first; this is a safety net
        logger.warning("ignoring invalid DeepConf settings: %s", e)
        return None


def state_of(req) -> Optional[TraceState]:
    """The request's TraceState, created on first use (None: not a DeepConf request)."""
    st = getattr(req, STATE_ATTR, _UNSET)
    if st is _UNSET:
        settings = settings_from_custom_params(req.sampling_params.custom_params)
        st = TraceState(settings) if settings is not None else None
        setattr(req, STATE_ATTR, st)
    return st


def push_token_confidences(req, confs: Union[Sequence[float], torch.Tensor]) -> None:
    """Stash confidences for the tokens the next ``update_finish_state`` will see (see module doc)."""
    st = state_of(req)
    if st is None:
        return
    values = confs.detach().reshape(-1).tolist() if isinstance(confs, torch.Tensor) else confs
    st.push(len(req.output_ids), values)


def record_confidences(req, start: int, confs: Sequence[float]) -> None:
    """Append per-token confidences to ``req.customized_info`` (aligned with output_ids)."""
    if req.customized_info is None:
        req.customized_info = {}
    values = req.customized_info.setdefault(META_CONFIDENCES, [])
    if len(values) < start:  # tokens that got no confidence (e.g. a path without the observer)
        values.extend([None] * (start - len(values)))
    del values[start:]
    values.extend(float(c) for c in confs)


# Attribute on SamplingBatchInfo holding this forward's RowPlan (None: nobody opted in).
PLAN_ATTR = "_sglang_pr_deepconf_plan"


@dataclass(frozen=True)
class RowPlan:
    """Which rows of a batch want a confidence, and with which k.

    ``reqs[i]`` owns row ``rows[i]`` of the logits. ``rows`` is None when every row takes part
    (the common fork-group case, no gather needed); ``k_index`` is None when all share
    ``k_max``, else a [R, 1] int64 device tensor of ``k_r - 1`` (column of the prefix table).
    """

    reqs: tuple
    rows: Optional[torch.Tensor]  # [R] int64 on the logits' device, or None (all rows)
    k_index: Optional[torch.Tensor]  # [R, 1] int64, or None (uniform k)
    k_max: int
    n_rows: int  # batch size the plan was made for (= logits rows)

    @classmethod
    def build(cls, reqs: Sequence, row_ids: Sequence[int], ks: Sequence[int], n_rows: int,
              device) -> "RowPlan":
        all_rows = len(row_ids) == n_rows
        uniform = min(ks) == max(ks)
        rows = None if all_rows else torch.tensor(row_ids, dtype=torch.int64).to(
            device, non_blocking=True)
        k_index = None if uniform else torch.tensor(
            [k - 1 for k in ks], dtype=torch.int64).view(-1, 1).to(device, non_blocking=True)
        return cls(tuple(reqs), rows, k_index, max(ks), n_rows)


@dataclass(frozen=True)
class ConfidenceHostOutput:
    """Host side: one confidence per planned request (float32 [R] on the CPU)."""

    reqs: tuple
    confidences: torch.Tensor

    def consume(self, batch, commits) -> None:
        # The confidences were already handed to the requests before update_finish_state
        # (see _before_process_result); nothing is left to do after the tokens are committed.
        return None

    def per_request(self) -> list[tuple[Any, float]]:
        return list(zip(self.reqs, self.confidences.tolist()))


@dataclass(frozen=True)
class ConfidenceDeviceOutput:
    reqs: tuple
    confidences: torch.Tensor  # [R] float32 on the device

    def copy_to_host(self, copy_tensor: Callable[[torch.Tensor], torch.Tensor]):
        return ConfidenceHostOutput(self.reqs, copy_tensor(self.confidences))


class DeepConfObserver:
    """SamplingObserver computing C_i for the planned rows (see the module docstring)."""

    def is_active(self, sampling_info) -> bool:
        return getattr(sampling_info, PLAN_ATTR, None) is not None

    def before_grammar(self, logits: torch.Tensor, sampling_info) -> Optional[tuple]:
        plan: Optional[RowPlan] = getattr(sampling_info, PLAN_ATTR, None)
        if plan is None or logits.dim() != 2 or logits.shape[0] != plan.n_rows:
            return None  # not the batch the plan was made for: track nothing, sample as usual
        rows = logits if plan.rows is None else logits.index_select(0, plan.rows)  # [R, V]
        if plan.k_index is None:  # one k for all rows (the usual fork group)
            conf = topk_logprob_mean(rows, plan.k_max)  # [R] float32
        else:
            table = topk_logprob_prefix_means(rows, plan.k_max)  # [R, K] float32
            conf = table.gather(1, plan.k_index.clamp(max=table.shape[1] - 1)).squeeze(1)
        return plan.reqs, conf  # [R] float32

    def after_sample(self, state: tuple, token_ids: torch.Tensor) -> ConfidenceDeviceOutput:
        reqs, conf = state
        return ConfidenceDeviceOutput(reqs, conf)


def find_host_output(aux) -> Optional[ConfidenceHostOutput]:
    """Our host output inside a step's auxiliary output (possibly a composite of several)."""
    if aux is None:
        return None
    if isinstance(aux, ConfidenceHostOutput):
        return aux
    for inner in getattr(aux, "outputs", ()) or ():
        found = find_host_output(inner)
        if found is not None:
            return found
    return None




class FinishLowConfidence(BaseFinishReason):
    """The trace's sliding-window confidence fell below its threshold (DeepConf early stop)."""

    def __init__(self, confidence: float, threshold: float, window: int, tokens: int):
        super().__init__()
        self.confidence, self.threshold = confidence, threshold
        self.window, self.tokens = window, tokens

    def to_json(self):
        return {"type": LOW_CONFIDENCE, "confidence": self.confidence,
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
