"""Online sliding-window group confidence: the per-trace state the scheduler keeps.

Window rule (the reference vLLM processor's, stated once here): the group confidence at
token t is the mean of the last ``window`` token confidences, and it is *only compared with
the threshold once the window is full* (t ≥ window). A trace shorter than the window can
therefore not be stopped online; offline, such a trace has one group, the mean of all its
tokens (:func:`sglang_pr.deepconf.summary.group_confidences`), so the warm-up threshold and the
vote treat it exactly like a longer one.

Worked example (window 3, threshold 1.0, confidences 2, 2, 0.5, 0.2):
t=1 [2]           not full   -> no decision
t=2 [2, 2]        not full   -> no decision
t=3 [2, 2, 0.5]   mean 1.5   -> keep going
t=4 [2, 0.5, 0.2] mean 0.9   -> stop *at* token 4 (index 3): it is the trace's last token.

Public API, stable (the Medusa drafter feeds several accepted tokens per step through it):

    tracker = ConfidenceTracker(window=2048, threshold=s)   # threshold None/-inf: never stops
    j = tracker.update(confs)   # confs: the accepted tokens' C, in order (floats or Tensor[n])
    # j is None (keep going) or the index in ``confs`` of the token at which the trace ends:
    # tokens confs[j+1:] must be dropped.
"""

from __future__ import annotations

import math
from collections import deque
from typing import Iterable, Optional, Sequence, Union

import torch

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
