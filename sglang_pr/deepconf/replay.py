"""Replay: run the real fork-group algorithm (:class:`~.group.GroupRun`) offline on a pool of
pre-sampled traces, so every lever (η, τ, window, warmup_votes, n_init, budget, width) can be
swept on one sampled pool without a server. The paper's online numbers were made the same way.

    pool = [PoolTrace.from_response(r) for r in generate_response]   # one /generate with n = P
    res = replay_group(DeepConfConfig(method="deepconf_low", budget=32, window=16), pool, seed=3)
    res.group.answer, res.tokens, res.steps
    hits, tokens, steps = replay_questions(cfg, pools, truths, replays=4)   # [Q] each

Pool files (one gzipped JSON per question): :func:`write_pool_question`, :func:`read_pool_question`.

How a trace is served (:class:`ReplayBackend`, a :class:`~.group.TraceBackend`):

* Trace index i of the group is pool trace ``order[i]`` (a seeded permutation: the traces of
  one group are distinct pool traces in a random order).
* ``generate`` with a threshold cuts the trace where the server would: the pool's per-token
  confidences are fed to the scheduler's own :class:`~.early_stop.ConfidenceTracker` (full
  window mean < threshold), except the trace's last token — on that step the trace finishes on
  its own (EOS, stop, length), and a natural finish wins over the early stop in the scheduler.
  A cut trace reports ``low_confidence`` and the tokens up to and including the stop token.
  Without a threshold the trace comes back whole.
* A simulated clock decides finishing order: every running trace makes one token per decode
  step, so a trace of n tokens started at step s finishes at step s + n. The clock is an
  asyncio event loop whose time is virtual (it jumps to the next finish when nothing else is
  ready), so ``width`` and the order of finishes are modelled deterministically, and GroupRun's
  own ``asyncio.wait`` logic runs unchanged. A consensus abort at step t charges each aborted
  trace the t − s tokens it made by then.

What replay cannot model:

* k: token confidences are fixed by the pool (sampled with one k); a group asking for another
  k is refused (ValueError).
* Wall time: ``steps`` is the group's makespan in decode steps; a step's real duration depends
  on the batch size and the machine, so wall time is an estimate (steps × seconds per step
  measured while sampling the pool). Prefill costs no steps here.
* Text of a cut or aborted trace: its prefix is decoded only if a ``decode`` function is given
  (else ""); such traces never vote, so the vote does not depend on it.
* Sampling itself: the pool's traces are exactly what the server would have sampled (a
  threshold does not change the sampled tokens, only where they stop), but a group can use
  each pool trace once, so budget ≤ pool size.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import os
import selectors
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Awaitable, Callable, Optional, Sequence, TypeVar

import numpy as np

from sglang_pr.deepconf.config import META_CONFIDENCES, META_SUMMARY
from sglang_pr.deepconf.config import DeepConfConfig, TraceSettings
from sglang_pr.deepconf.early_stop import ConfidenceTracker, FinishLowConfidence
from sglang_pr.deepconf.group import GroupResult, GroupRun
from sglang_pr.deepconf.summary import summarize

Decode = Callable[[Sequence[int]], str]
T = TypeVar("T")


@dataclass(frozen=True)
class PoolTrace:
    """One sampled trace, tracked without a threshold: everything replay needs."""

    text: str
    confidences: tuple[float, ...]  # [tokens] one per generated token
    finish_reason: dict
    tokens: int
    output_ids: Optional[tuple[int, ...]] = None  # [tokens], to decode a cut trace's text

    def __post_init__(self):
        if len(self.confidences) != self.tokens or self.tokens <= 0:
            raise ValueError(f"a pool trace needs one confidence per token and >= 1 token "
                             f"(got {len(self.confidences)} for {self.tokens} tokens)")
        if self.output_ids is not None and len(self.output_ids) != self.tokens:
            raise ValueError(f"{len(self.output_ids)} output ids for {self.tokens} tokens")

    @classmethod
    def from_response(cls, out: dict) -> "PoolTrace":
        """From one /generate output tracked with ``custom_params.deepconf`` (no threshold)."""
        meta = out.get("meta_info") or {}
        confs = meta.get(META_CONFIDENCES)
        if not confs or any(c is None for c in confs):
            raise ValueError("a pool trace needs meta_info.deepconf_confidences for every token")
        ids = out.get("output_ids")
        return cls(text=out.get("text") or "", confidences=tuple(float(c) for c in confs),
                   finish_reason=dict(meta.get("finish_reason") or {}),
                   tokens=int(meta.get("completion_tokens") or len(confs)),
                   output_ids=tuple(ids) if ids is not None else None)

    def to_dict(self, digits: int = 6) -> dict:
        """JSON-safe; confidences rounded (``digits``) to keep a pool file small."""
        return {"text": self.text, "confidences": [round(c, digits) for c in self.confidences],
                "finish_reason": self.finish_reason, "tokens": self.tokens,
                "output_ids": None if self.output_ids is None else list(self.output_ids)}

    @classmethod
    def from_dict(cls, d: dict) -> "PoolTrace":
        ids = d.get("output_ids")
        return cls(d["text"], tuple(d["confidences"]), dict(d["finish_reason"]), int(d["tokens"]),
                   tuple(ids) if ids is not None else None)


def cut(trace: PoolTrace, settings: TraceSettings) -> tuple[int, dict]:
    """(tokens, finish_reason) of ``trace`` generated under ``settings`` (module docstring)."""
    if not settings.stops:
        return trace.tokens, trace.finish_reason
    tracker = ConfidenceTracker(settings.window, settings.threshold)
    j = tracker.update(trace.confidences[:-1])  # the last token finishes the trace on its own
    if j is None:
        return trace.tokens, trace.finish_reason
    # the scheduler's own finish record for an early stop
    return j + 1, FinishLowConfidence(tracker.stop_confidence, settings.threshold,
                                      settings.window, j + 1).to_json()


class ReplayBackend:
    """A :class:`~.group.TraceBackend` serving pool traces on the virtual clock (module doc).

    ``order``: pool index of each group trace index (default: the pool's order); ``k``: the k
    the pool was sampled with (None: not checked); ``decode``: token ids -> text, for the
    prefix of a cut or aborted trace. The clock counts decode steps (one token each)."""

    def __init__(self, pool: Sequence[PoolTrace], order: Optional[Sequence[int]] = None, *,
                 k: Optional[int] = None, decode: Optional[Decode] = None,
                 prompt_tokens: int = 0):
        self.pool, self.k, self.decode, self.prompt_tokens = pool, k, decode, prompt_tokens
        self.order = list(range(len(pool))) if order is None else list(order)
        self._live: dict[int, tuple] = {}  # index -> (future, timer, start, trace, window)
        self.aborted: list[int] = []

    async def prefill(self) -> dict:
        return {"prompt_tokens": self.prompt_tokens}

    def _trace(self, index: int) -> PoolTrace:
        if index >= len(self.order):
            raise ValueError(f"the group asked for trace {index + 1} but the replay pool has "
                             f"{len(self.order)}: budget must be <= pool size")
        return self.pool[self.order[index]]

    def _output(self, trace: PoolTrace, n: int, finish: dict, window: int) -> dict:
        ids = None if trace.output_ids is None else list(trace.output_ids[:n])
        if n == trace.tokens:
            text = trace.text
        else:
            text = self.decode(ids) if self.decode is not None and ids is not None else ""
        confs = list(trace.confidences[:n])
        meta = {"finish_reason": finish, "completion_tokens": n,
                "prompt_tokens": self.prompt_tokens, META_CONFIDENCES: confs,
                META_SUMMARY: summarize(confs, window).to_dict()}  # what tokenizer_hooks adds
        return {"text": text, "output_ids": ids, "meta_info": meta}

    async def generate(self, index: int, settings: TraceSettings) -> dict:
        if self.k is not None and settings.k != self.k:
            raise ValueError(f"replay: k is fixed by the pool (k={self.k}); the group asked "
                             f"for k={settings.k}")
        trace = self._trace(index)
        n, finish = cut(trace, settings)
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        out = self._output(trace, n, finish, settings.window)
        timer = loop.call_later(n, _resolve, fut, out)  # one token per step
        self._live[index] = (fut, timer, loop.time(), trace, settings.window)
        try:
            return await fut
        finally:
            self._live.pop(index, None)

    def abort(self, index: int) -> None:
        live = self._live.get(index)
        if live is None or live[0].done():
            return
        fut, timer, start, trace, window = live
        timer.cancel()
        made = int(round(asyncio.get_running_loop().time() - start))  # tokens made until now
        finish = {"type": "abort", "message": "aborted by the group"}
        self.aborted.append(index)
        fut.set_result(self._output(trace, min(made, trace.tokens), finish, window))


def _resolve(fut: asyncio.Future, out: dict) -> None:
    if not fut.done():
        fut.set_result(out)


class _VirtualSelector(selectors.DefaultSelector):
    """Never waits: when the loop would sleep until its next timer, the clock jumps there."""

    def __init__(self, clock: list):
        super().__init__()
        self._clock = clock

    def select(self, timeout: Optional[float] = None):
        ready = super().select(0)
        if ready:
            return ready
        if timeout is None:  # nothing ready, no timer: a real loop would block for ever
            raise RuntimeError("replay: the group waits on nothing (deadlock)")
        self._clock[0] += timeout
        return []


class _VirtualLoop(asyncio.SelectorEventLoop):
    def __init__(self):
        self._clock = [0.0]  # in decode steps; integers stay exact in float64
        super().__init__(_VirtualSelector(self._clock))

    def time(self) -> float:
        return self._clock[0]


@dataclass(frozen=True)
class ReplayResult:
    group: GroupResult
    steps: float  # the group's makespan in decode steps (wall time ∝ steps)
    order: tuple[int, ...]  # pool index of each trace index

    @property
    def tokens(self) -> int:
        return int(self.group.totals["generated_tokens"])


def replay_group(config: DeepConfConfig, pool: Sequence[PoolTrace], *,
                 order: Optional[Sequence[int]] = None, seed: Any = None,
                 k: Optional[int] = None, decode: Optional[Decode] = None,
                 prompt_tokens: int = 0, **run_kwargs: Any) -> ReplayResult:
    """One group on ``pool`` with the real :class:`GroupRun`. Trace order: ``order``, else a
    permutation seeded by ``seed`` (anything ``numpy.random.default_rng`` takes, e.g. a tuple
    (run seed, question, replay)), else the pool's own order. Runs its own event loop (call it
    from synchronous code, not from inside a running loop)."""
    if order is None:
        order = (np.random.default_rng(seed).permutation(len(pool)).tolist() if seed is not None
                 else list(range(len(pool))))
    if config.budget > len(order):
        raise ValueError(f"budget {config.budget} exceeds the replay pool ({len(order)} traces)")
    backend = ReplayBackend(pool, order, k=k, decode=decode, prompt_tokens=prompt_tokens)
    group, steps = run_virtual(GroupRun(config, backend, **run_kwargs).run())
    return ReplayResult(group, steps, tuple(order))


def run_virtual(coro: Awaitable[T]) -> tuple[T, float]:
    """Run the coroutine ``coro`` to completion on a fresh virtual-time loop; (its result,
    elapsed steps). Pass a coroutine, not a future made outside (it would belong to another
    loop)."""
    loop = _VirtualLoop()
    try:
        result = loop.run_until_complete(coro)
        return result, loop.time()
    finally:
        loop.close()


def replay_questions(config: DeepConfConfig, pools: Sequence[Sequence[PoolTrace]],
                     truths: Sequence[Any], replays: int = 1, seed: int = 0,
                     k: Optional[int] = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``replays`` seeded groups per question (trace order seeded by (seed, question, replay));
    per question the mean of (voted answer == truth, generated tokens, steps), each [Q]."""
    out = np.zeros((3, len(pools), replays))  # [hits/tokens/steps, Q, R]
    for q, (pool, truth) in enumerate(zip(pools, truths, strict=True)):
        for r in range(replays):
            res = replay_group(config, pool, seed=(seed, q, r), k=k)
            out[:, q, r] = (res.group.answer is not None and res.group.answer == truth,
                            res.tokens, res.steps)
    hits, tokens, steps = out.mean(axis=2)
    return hits, tokens, steps


# Pool files: one gzipped JSON per question, {"prompt", "truth", "wall_s", "traces": [...]}.
def write_pool_question(path: Path, record: dict) -> None:
    """Atomically (a run killed mid-write leaves no half question behind)."""
    record = {**record, "traces": [t.to_dict() for t in record["traces"]]}
    tmp = path.with_suffix(".tmp")
    with gzip.open(tmp, "wt") as f:
        json.dump(record, f)
    os.replace(tmp, path)


def read_pool_question(path: Path) -> dict:
    with gzip.open(path, "rt") as f:
        record = json.load(f)
    record["traces"] = [PoolTrace.from_dict(t) for t in record["traces"]]
    return record


def read_pool_split(root: Path, split: str, limit: Optional[int] = None) -> list[dict]:
    """A split's questions collected so far, in order (stops at the first gap, or ``limit``)."""
    out: list[dict] = []
    while (limit is None or len(out) < limit) and \
            (path := Path(root) / split / f"{len(out):05d}.json.gz").exists():
        out.append(read_pool_question(path))
    return out
