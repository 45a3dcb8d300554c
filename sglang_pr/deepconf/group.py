"""Fork-group orchestration: online DeepConf (or plain self-consistency) for one prompt.

Algorithm (η = percentage kept, see :mod:`.config`; all traces share the prompt's KV):

1. Prefill the prompt once (``max_new_tokens=0``) so every branch hits the radix cache.
2. DeepConf: run the warm-up (``n_init`` traces, or the config's budget rule) to completion
   (no threshold), at most ``width`` at a time. s = the (100 − η)-th percentile of their lowest
   group confidences, lowered where needed so that at least ``min_voters`` of the warm-up
   traces that answered clear it (the voter floor).
3. Votes: a finished trace votes iff it ended on its own (not early-stopped, not aborted), gave
   an answer, and its lowest group confidence is ≥ s (warm-up traces included — the reference
   implementation's rule; ``warmup_votes="all"``: every warm-up trace that answered votes, so
   the consensus check after the warm-up sees all N_init votes, not only the top η %).
   Weight: its ``vote_confidence`` summary (default: tail; plain majority for ``sc``).
4. Consensus: after the warm-up and after every later finished trace, if the leading answer's
   share V(â)/Σ V ≥ τ, no new trace starts and running ones are aborted (their KV is freed by
   SGLang's abort path).
5. Otherwise further traces run with threshold s — the scheduler ends each one the step its
   window mean drops below s — until ``budget`` traces have started.

``method="sc"``: ``budget`` traces, no threshold, plain majority, no consensus stop unless
``consensus_stop=True``. The orchestration is backend-agnostic (:class:`TraceBackend`); the
server binds it to SGLang's tokenizer manager (:mod:`.server_backend`), tests to fakes.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Awaitable, Callable, Optional, Protocol, Sequence

from sglang_pr.deepconf.config import LOW_CONFIDENCE, DeepConfConfig, TraceSettings
from sglang_pr.deepconf.extract import Extract, get_extractor
from sglang_pr.deepconf.summary import floored_threshold, summarize
from sglang_pr.deepconf.vote import VoteResult, weighted_vote

ABORT_WAIT_S = 30.0  # how long aborted traces get to report their partial output


class TraceBackend(Protocol):
    async def prefill(self) -> dict: ...  # meta_info of the prefix-caching request

    async def generate(self, index: int, settings: TraceSettings) -> dict: ...  # /generate out

    def abort(self, index: int) -> None: ...


@dataclass
class TraceRecord:
    index: int
    phase: str  # "warmup" | "final" | "sc"
    text: str = ""
    answer: Optional[str] = None
    finish_reason: Optional[dict] = None
    tokens: int = 0
    cached_tokens: int = 0
    confidence: Optional[dict] = None  # TraceConfidence.to_dict()
    confidences: Optional[list] = None  # per-token, only when asked for
    threshold: Optional[float] = None
    voted: bool = False
    weight: float = 0.0

    @property
    def finish_type(self) -> Optional[str]:
        return (self.finish_reason or {}).get("type")

    @property
    def lowest(self) -> Optional[float]:
        return (self.confidence or {}).get("lowest_group")


@dataclass
class GroupResult:
    answer: Optional[str]
    text: Optional[str]
    vote: dict
    threshold: Optional[float]
    traces: list[TraceRecord]
    totals: dict
    config: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


def most_confident(traces: Sequence[TraceRecord]) -> Optional[TraceRecord]:
    """The trace with the largest vote weight (ties: the higher lowest-group confidence)."""
    return max(traces, key=lambda t: (t.weight, (t.confidence or {}).get("lowest_group") or 0.0),
               default=None)


Event = Callable[[dict], Awaitable[None]]


class GroupRun:
    """One group; ``await GroupRun(...).run()``. Cancelling the task aborts every trace."""

    def __init__(self, config: DeepConfConfig, backend: TraceBackend,
                 on_event: Optional[Event] = None, return_confidences: bool = False,
                 extract: Optional[Extract] = None):
        self.cfg, self.backend, self.on_event = config, backend, on_event
        self.return_confidences = return_confidences
        self.extract = extract or get_extractor(config.extractor, config.answer_regex)
        self.traces: list[TraceRecord] = []
        self.running: dict[asyncio.Task, TraceRecord] = {}
        self.threshold: Optional[float] = None
        self.vote = VoteResult(None)
        self.consensus = False
        self.prompt_meta: dict = {}

    async def run(self) -> GroupResult:
        start = time.perf_counter()
        try:
            self.prompt_meta = await self.backend.prefill() or {}
            await self._phases()
        except BaseException:
            self._abort_running(cancel=True)
            raise
        return self._result(time.perf_counter() - start)

    async def _phases(self) -> None:
        cfg = self.cfg
        if not cfg.is_deepconf:
            await self._phase("sc", cfg.budget, None, cfg.use_consensus_stop)
            return
        await self._phase("warmup", cfg.warmup, None, consensus=False)
        lows = [t.lowest for t in self.traces if t.lowest is not None]
        # the voter floor counts traces that could vote: those that gave an answer
        could_vote = [t.lowest for t in self.traces
                      if t.lowest is not None and t.answer is not None]
        self.threshold = (floored_threshold(lows, cfg.effective_eta, could_vote, cfg.voter_floor)
                          if lows else None)
        self._revote()
        await self._emit({"event": "threshold", "threshold": self.threshold,
                          "vote": self.vote.to_dict()})
        if cfg.use_consensus_stop and self._consensus_reached():
            return
        await self._phase("final", cfg.budget - cfg.warmup, self.threshold,
                          cfg.use_consensus_stop)

    async def _phase(self, phase: str, n: int, threshold: Optional[float],
                     consensus: bool) -> None:
        settings = self.cfg.trace_settings(threshold)
        started = 0
        while started < n or self.running:
            while started < n and len(self.running) < self.cfg.width and not self.consensus:
                self._start(phase, settings)
                started += 1
            if not self.running:
                break
            done, _ = await asyncio.wait(self.running, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                await self._finish(task, phase)
            if consensus and not self.consensus and self._consensus_reached():
                await self._stop_running()

    def _start(self, phase: str, settings: TraceSettings) -> None:
        rec = TraceRecord(index=len(self.traces), phase=phase, threshold=settings.threshold)
        self.traces.append(rec)
        task = asyncio.ensure_future(self.backend.generate(rec.index, settings))
        self.running[task] = rec

    async def _finish(self, task: asyncio.Task, phase: str) -> None:
        rec = self.running.pop(task)
        try:
            out = task.result()
        except asyncio.CancelledError:
            out = {"text": "", "meta_info": {"finish_reason": {"type": "abort"}}}
        self._fill(rec, out)
        if phase != "warmup":
            self._maybe_vote(rec)
        await self._emit({"event": "trace", "trace": asdict(rec),
                          "vote": self.vote.to_dict()})

    def _fill(self, rec: TraceRecord, out: dict) -> None:
        meta = out.get("meta_info") or {}
        rec.text = out.get("text") or ""
        rec.finish_reason = meta.get("finish_reason")
        rec.tokens = int(meta.get("completion_tokens") or 0)
        rec.cached_tokens = int(meta.get("cached_tokens") or 0)
        confs = meta.get("deepconf_confidences")
        if meta.get("deepconf") is not None:
            rec.confidence = dict(meta["deepconf"])
        elif confs:
            rec.confidence = summarize([c for c in confs if c is not None], self.cfg.window).to_dict()
        if self.return_confidences:
            rec.confidences = confs
        rec.answer = self.extract(rec.text) if rec.text else None

    def _eligible(self, rec: TraceRecord) -> bool:
        if rec.finish_type in (LOW_CONFIDENCE, "abort") or rec.answer is None:
            return False
        if self.threshold is None or (rec.phase == "warmup" and self.cfg.warmup_votes == "all"):
            return True
        return rec.lowest is not None and rec.lowest >= self.threshold

    def _mark(self, rec: TraceRecord) -> None:
        rec.voted = self._eligible(rec)
        # the weight: the summary ``vote_confidence`` names (the threshold is always the
        # lowest group's, the signal the scheduler stops on)
        weight = (rec.confidence or {}).get(self.cfg.vote_confidence)
        rec.weight = (weight or 0.0) if self.cfg.use_weighted_vote else 1.0

    def _tally(self) -> None:
        voters = [t for t in self.traces if t.voted]
        self.vote = weighted_vote([t.answer for t in voters], [t.weight for t in voters])

    def _maybe_vote(self, rec: TraceRecord) -> None:
        self._mark(rec)
        self._tally()

    def _revote(self) -> None:
        """Every trace re-marked (the threshold changed), then one tally."""
        for rec in self.traces:
            self._mark(rec)
        self._tally()

    def _consensus_reached(self) -> bool:
        if self.vote.answer is not None and self.vote.share >= self.cfg.tau:
            self.consensus = True
        return self.consensus

    async def _stop_running(self) -> None:
        if not self.running:
            return
        self._abort_running()
        done, pending = await asyncio.wait(self.running, timeout=ABORT_WAIT_S)
        for task in pending:
            task.cancel()
        for task in list(self.running):
            rec = self.running.pop(task)
            out = task.result() if task in done and not task.cancelled() and \
                task.exception() is None else {"text": "", "meta_info": {}}
            self._fill(rec, out)
            if rec.finish_type in (None, "abort"):  # a trace that ended on its own keeps its reason
                rec.finish_reason = {**(rec.finish_reason or {}), "type": "abort",
                                     "message": "consensus reached"}
            await self._emit({"event": "trace", "trace": asdict(rec),
                              "vote": self.vote.to_dict()})

    def _abort_running(self, cancel: bool = False) -> None:
        for task, rec in self.running.items():
            self.backend.abort(rec.index)
            if cancel:  # nobody will wait for it (the group itself was cancelled)
                task.cancel()

    async def _emit(self, event: dict) -> None:
        if self.on_event is not None:
            await self.on_event(event)

    def _result(self, wall_s: float) -> GroupResult:
        voters = [t for t in self.traces if t.voted and t.answer == self.vote.answer]
        best = most_confident(voters)
        totals = {
            "generated_tokens": sum(t.tokens for t in self.traces),
            "traces_started": len(self.traces),
            "traces_completed": sum(t.finish_type not in (LOW_CONFIDENCE, "abort")
                                    for t in self.traces),
            "stopped_early": sum(t.finish_type == LOW_CONFIDENCE for t in self.traces),
            "aborted": sum(t.finish_type == "abort" for t in self.traces),
            "voters": sum(t.voted for t in self.traces),
            "consensus_reached": self.consensus,
            "prompt_tokens": int(self.prompt_meta.get("prompt_tokens") or 0),
            "cached_prompt_tokens": sum(t.cached_tokens for t in self.traces),
            "wall_s": wall_s,
        }
        return GroupResult(self.vote.answer, best.text if best else None, self.vote.to_dict(),
                           self.threshold, self.traces, totals,
                           self.cfg.model_dump() | {"eta": self.cfg.effective_eta,
                                                    "n_init": self.cfg.warmup})


async def run_group(config: DeepConfConfig, backend: TraceBackend, **kwargs: Any) -> GroupResult:
    return await GroupRun(config, backend, **kwargs).run()
