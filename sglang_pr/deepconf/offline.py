"""Offline DeepConf: filter finished traces by confidence and vote (Python API).

    from sglang_pr.deepconf.offline import Trace, offline_vote, load_traces
    traces = load_traces("group_response.json")          # or [Trace(text=..., confidences=[...])]
    result = offline_vote(traces, method="deepconf_low", confidence="tail", window=16)
    result.answer, result.vote.share, result.kept

Methods (shared with the frontend ``vote`` primitive):

* ``sc`` — every answered trace, one vote each (self-consistency, as ``DeepConfConfig.method``);
* ``weighted`` — every answered trace, weighted by its confidence;
* ``deepconf_low`` / ``deepconf_high`` — keep the top 10 % / 90 % by confidence, weighted vote;
* ``deepconf`` — keep the top ``eta`` %, weighted vote.

Traces that ended early (finish type ``low_confidence``) are incomplete and excluded unless
``include_stopped=True``. Votes and ties: :func:`sglang_pr.deepconf.vote.weighted_vote`.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence, Union

from sglang_pr.deepconf.config import (
    LOW_CONFIDENCE,
    META_CONFIDENCES,
    META_SUMMARY,
    METHOD_ETA,
    DeepConfConfig,
)
from sglang_pr.deepconf.extract import Extract, get_extractor
from sglang_pr.deepconf.summary import TraceConfidence, summarize
from sglang_pr.deepconf.vote import VoteResult, keep_top, weighted_vote

VOTE_METHODS = ("sc", "weighted", "deepconf_low", "deepconf_high", "deepconf")
# Old names still accepted (with a DeprecationWarning) so existing programs keep working.
DEPRECATED_METHODS = {"majority": "sc"}
_DEFAULTS = DeepConfConfig.model_fields  # a group's defaults, read here, never restated


def resolve_method(method: str, stacklevel: int = 3) -> str:
    """``method`` under its one name: ``"majority"`` becomes ``"sc"`` with a DeprecationWarning
    (``stacklevel`` 3 points it at whoever called the function that calls this)."""
    new = DEPRECATED_METHODS.get(method)
    if new is None:
        return method
    warnings.warn(f"vote method {method!r} is deprecated; use {new!r} (the same method)",
                  DeprecationWarning, stacklevel=stacklevel)
    return new


@dataclass
class Trace:
    """One finished trace: its text and either per-token confidences or a ready summary."""

    text: str
    confidences: Optional[list[float]] = None
    summary: Optional[TraceConfidence] = None
    answer: Optional[str] = None
    finish_reason: Optional[str] = None
    tokens: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    def confidence(self, kind: str, window: int) -> Optional[float]:
        if self.confidences is not None:
            return summarize(self.confidences, window).get(kind)
        return self.summary.get(kind) if self.summary is not None else None

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Trace":
        """From a group-response trace, a /generate response or a plain dict."""
        meta = d.get("meta_info") or {}
        confs = d.get("confidences", meta.get(META_CONFIDENCES))
        summ = d.get("confidence", meta.get(META_SUMMARY))
        finish = d.get("finish_reason", meta.get("finish_reason"))
        if isinstance(finish, dict):
            finish = finish.get("type")
        return cls(text=d.get("text", ""), confidences=confs,
                   summary=TraceConfidence.from_dict(summ),
                   answer=d.get("answer"), finish_reason=finish,
                   tokens=int(d.get("tokens", meta.get("completion_tokens", 0)) or 0))


def load_traces(source: Union[str, Path, dict, list]) -> list[Trace]:
    """Traces from a JSON file/object: a group response (``{"traces": [...]}``) or a list."""
    data = json.loads(Path(source).read_text()) if isinstance(source, (str, Path)) else source
    items = data.get("traces", []) if isinstance(data, dict) else data
    return [t if isinstance(t, Trace) else Trace.from_dict(t) for t in items]


@dataclass(frozen=True)
class OfflineResult:
    answer: Optional[str]
    vote: VoteResult
    kept: list[bool]  # per input trace: did it vote
    confidences: list[Optional[float]]
    answers: list[Optional[str]]


def method_eta(method: str, eta: Optional[float] = None) -> Optional[float]:
    """η for a vote method (None: no filter)."""
    method = resolve_method(method)
    if method not in VOTE_METHODS:
        raise ValueError(f"unknown vote method {method!r}; known: {', '.join(VOTE_METHODS)}")
    if method in METHOD_ETA:
        return METHOD_ETA[method]
    if method == "deepconf":
        if eta is None or not 0 < eta <= 100:
            raise ValueError("method 'deepconf' needs eta in (0, 100]")
        return eta
    return None


def offline_vote(traces: Sequence[Trace], method: str = _DEFAULTS["method"].default, *,
                 confidence: str = _DEFAULTS["vote_confidence"].default,
                 window: int = _DEFAULTS["window"].default, eta: Optional[float] = None,
                 extractor: Union[str, Extract] = _DEFAULTS["extractor"].default,
                 answer_regex: Optional[str] = None,
                 include_stopped: bool = False) -> OfflineResult:
    """Filter (top-η % by ``confidence``) and vote (weighted unless ``sc``)."""
    method = resolve_method(method)
    extract = extractor if callable(extractor) else get_extractor(extractor, answer_regex)
    keep_eta = method_eta(method, eta)
    answers = [t.answer if t.answer is not None else extract(t.text) for t in traces]
    usable = [include_stopped or t.finish_reason != LOW_CONFIDENCE for t in traces]
    needs_conf = method != "sc"
    confs = [t.confidence(confidence, window) if needs_conf else None for t in traces]
    if needs_conf and any(u and c is None for u, c in zip(usable, confs)):
        raise ValueError(f"method {method!r} needs per-trace confidences; some traces have none")
    # keep_top never keeps a trace without a confidence, so unusable ones go in as None.
    kept = list(usable) if keep_eta is None else \
        keep_top([c if u else None for c, u in zip(confs, usable)], keep_eta)
    vote_answers = [a if k else None for a, k in zip(answers, kept)]
    weights = None if method == "sc" else [c if c is not None else 0.0 for c in confs]
    result = weighted_vote(vote_answers, weights)
    return OfflineResult(result.answer, result, kept, confs, answers)

