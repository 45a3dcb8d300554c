"""Per-trace confidence summaries and the percentile threshold (offline, numpy).

Definitions (natural-log token confidences C_1..C_n, window w):

* group confidences: the means of every full window ``C[i:i+w]`` (n − w + 1 of them); a trace
  shorter than w has a single group, the mean of all its tokens (the online tracker's rule for a
  not-yet-full window, see :mod:`sglang_pr.deepconf.early_stop`).
* lowest_group: the minimum group confidence — the online signal.
* bottom10: the mean of the lowest ``max(1, floor(0.1 · G))`` group confidences.
* tail: the mean of the last w token confidences (all of them if n < w).
* mean: the mean of all token confidences.

Worked example (w = 2, C = [3, 1, 2, 4]): groups [2.0, 1.5, 3.0]; lowest 1.5; bottom10 1.5
(floor(0.3) → 1 group); tail mean([2, 4]) = 3.0; mean 2.5.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Optional, Sequence, get_args

import numpy as np

from sglang_pr.deepconf.config import ConfidenceKind

BOTTOM_FRACTION = 0.10
KINDS: tuple[str, ...] = get_args(ConfidenceKind)  # the four summaries, declared in config


def group_confidences(confs: Sequence[float], window: int) -> np.ndarray:
    """Sliding-window means [G] float64 (see module docstring); empty for an empty trace."""
    c = np.asarray(confs, dtype=np.float64)
    if c.size == 0:
        return c
    if c.size < window:
        return np.array([c.mean()])
    csum = np.concatenate(([0.0], np.cumsum(c)))  # [n + 1]
    return (csum[window:] - csum[:-window]) / window  # [n - w + 1]


@dataclass(frozen=True)
class TraceConfidence:
    """Summary confidences of one trace (None for a trace with no tokens)."""

    lowest_group: Optional[float]
    bottom10: Optional[float]
    tail: Optional[float]
    mean: Optional[float]
    n_tokens: int

    def get(self, kind: str) -> Optional[float]:
        if kind not in KINDS:
            raise ValueError(f"unknown confidence kind {kind!r}")
        return getattr(self, kind)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Any) -> Optional["TraceConfidence"]:
        """From a server's per-trace summary (``meta_info["deepconf"]``); None if ``d`` is none."""
        if not isinstance(d, dict) or "lowest_group" not in d:
            return None
        return cls(**{k: d.get(k) for k in KINDS}, n_tokens=int(d.get("n_tokens") or 0))


def summarize(confs: Sequence[float], window: int) -> TraceConfidence:
    """All four summaries of one trace's token confidences."""
    c = np.asarray(confs, dtype=np.float64)
    if c.size == 0:
        return TraceConfidence(None, None, None, None, 0)
    groups = group_confidences(c, window)
    n_bottom = max(1, int(groups.size * BOTTOM_FRACTION))
    bottom = np.partition(groups, n_bottom - 1)[:n_bottom]
    return TraceConfidence(
        lowest_group=float(groups.min()),
        bottom10=float(bottom.mean()),
        tail=float(c[-window:].mean()),
        mean=float(c.mean()),
        n_tokens=int(c.size),
    )


def percentile_threshold(confidences: Sequence[float], eta: float) -> float:
    """The (100 − η)-th percentile (linear interpolation): keeping ``conf >= s`` keeps ~top-η %.

    η is the percentage of traces kept (see :mod:`sglang_pr.deepconf.config`).
    """
    if not 0.0 < eta <= 100.0:
        raise ValueError(f"eta must be in (0, 100], got {eta}")
    vals = [float(v) for v in confidences if v is not None and not math.isnan(v)]
    if not vals:
        raise ValueError("no confidences to take a percentile of")
    return float(np.percentile(np.asarray(vals, dtype=np.float64), 100.0 - eta))


def floored_threshold(confidences: Sequence[float], eta: float, voters: Sequence[float],
                      floor: int) -> float:
    """:func:`percentile_threshold`, lowered where needed so that at least ``floor`` of
    ``voters`` (the confidences of the traces that could vote) are >= it: the floor's
    m-th largest voter confidence (all of them when fewer than m). ``floor`` 0: no floor."""
    s = percentile_threshold(confidences, eta)
    vals = sorted((float(v) for v in voters if v is not None and not math.isnan(v)),
                  reverse=True)
    if floor <= 0 or not vals:
        return s
    return min(s, vals[min(floor, len(vals)) - 1])
