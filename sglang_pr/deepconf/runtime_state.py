"""Per-request DeepConf state in the scheduler, and the API that feeds it token confidences.

A request opts in through ``sampling_params.custom_params["deepconf"]`` (a
:class:`~sglang_pr.deepconf.config.TraceSettings` dict). The scheduler hooks
(:mod:`sglang_pr.deepconf.scheduler_hooks`) attach a :class:`TraceState` to the ``Req`` the first
time it is batched, stash the confidences of each step's new tokens with
:func:`push_token_confidences`, and consume them in ``Req.update_finish_state`` — where every
other finish condition of that step is decided, before SGLang releases finished requests' KV.

Speculative decoders (the Medusa drafter) use the same entry point, once per verify step and
before ``req.update_finish_state(n_accepted)``::

    from sglang_pr.deepconf import runtime_state
    if runtime_state.state_of(req) is not None:
        runtime_state.push_token_confidences(req, confs)  # Tensor[n_accepted] or list, in order

with ``confs = token_confidence(verify_logits_of_the_accepted_positions, k)`` (natural-log
top-k confidence, :mod:`sglang_pr.deepconf.confidence`). If the window mean falls below the
threshold at accepted token j, the request finishes there and tokens after j are cut
(``finished_len``), exactly as a stop token inside an accepted run is handled.
"""

from __future__ import annotations

import logging
from typing import Any, Optional, Sequence, Union

import torch

from sglang_pr.deepconf.config import (
    ConfigError,
    TraceSettings,
    parse_trace_settings,
    requested,
)
from sglang_pr.deepconf.tracker import ConfidenceTracker

logger = logging.getLogger(__name__)

# Attribute on sglang's Req holding its TraceState (None: the request did not opt in).
STATE_ATTR = "_sglang_pr_deepconf"
# Per-token meta_info key: one confidence per output token (None where none was computed).
META_CONFIDENCES = "deepconf_confidences"
# Request-level meta_info key with the trace's summary, added in the main process.
META_SUMMARY = "deepconf"

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
