"""The ``vote`` primitive: ``s += vote(forks, "answer", method="deepconf_low")``.

Waits for every fork's ``name`` generation, extracts each answer, filters and votes with
:func:`sglang_pr.deepconf.offline.offline_vote`, and returns an expression that appends the
voted answer to the parent state as variable ``name`` (an empty string when nobody answered).
The full result (answers, confidences, which traces voted, vote shares) is ``expr.result`` and
is also stored as variable ``f"{name}_vote"`` of the state the expression is added to.

Methods: ``sc`` (plain majority, self-consistency; the default) | ``weighted`` |
``deepconf_low`` | ``deepconf_high`` | ``deepconf`` (with ``eta``). All but ``sc`` need
confidences: use :class:`~sglang_pr.frontends.endpoint.DeepConfRuntimeEndpoint` as the backend.
Filter and vote defaults (``confidence``, ``extractor``) are ``DeepConfConfig``'s.
"""

from __future__ import annotations

from typing import Iterable, Optional, Union

from sglang.lang.interpreter import ProgramState, ProgramStateGroup
from sglang.lang.ir import SglConstantText, SglExprList, SglVarScopeBegin, SglVarScopeEnd

from sglang_pr.deepconf.config import DeepConfConfig
from sglang_pr.deepconf.offline import OfflineResult, Trace, offline_vote, resolve_method
from sglang_pr.deepconf.summary import TraceConfidence

_DEFAULTS = DeepConfConfig.model_fields  # filter/vote defaults, declared once in config


class VoteExpr(SglExprList):
    """Var-scoped constant text: executing it sets ``name`` to the voted answer."""

    def __init__(self, name: str, answer: Optional[str], result: Optional[dict]):
        super().__init__([SglVarScopeBegin(name), SglConstantText(answer or ""),
                          SglVarScopeEnd(name)])
        self.name, self.answer, self.result = name, answer, result


def _states(forks: Union[ProgramStateGroup, Iterable[ProgramState]]) -> list[ProgramState]:
    return list(forks.states) if isinstance(forks, ProgramStateGroup) else list(forks)


def _trace(state: ProgramState, name: str) -> Trace:
    text = state[name]  # waits for the generation
    meta = state.get_meta_info(name) or {}
    summary = TraceConfidence.from_dict(meta.get("deepconf"))
    finish = meta.get("finish_reason")
    return Trace(text=text if isinstance(text, str) else str(text), summary=summary,
                 finish_reason=finish.get("type") if isinstance(finish, dict) else finish,
                 tokens=int(meta.get("completion_tokens") or 0))


def _result_dict(res: OfflineResult, traces: list[Trace], method: str) -> dict:
    return {"method": method, "answer": res.answer, "vote": res.vote.to_dict(),
            "answers": res.answers, "confidences": res.confidences, "kept": res.kept,
            "tokens": [t.tokens for t in traces]}


# The default method is "sc", not DeepConfConfig's "deepconf_low": it is the only one that
# works on any backend (no confidences needed).
def vote(forks, name: str, method: str = "sc", *, eta: Optional[float] = None,
         confidence: str = _DEFAULTS["vote_confidence"].default,
         extractor: str = _DEFAULTS["extractor"].default,
         answer_regex: Optional[str] = None, include_stopped: bool = False) -> VoteExpr:
    """Vote over the forks' ``name`` generations (see the module docstring)."""
    method = resolve_method(method)
    states = _states(forks)
    if not states:
        raise ValueError("vote: no forks to vote over")
    if any(type(s).__name__ == "TracerProgramState" for s in states):
        return VoteExpr(name, None, None)  # prefix tracing: nothing was generated
    traces = [_trace(s, name) for s in states]
    if method != "sc" and any(t.summary is None for t in traces):
        raise ValueError(
            f"vote(method={method!r}) needs per-trace confidences: run the program on a "
            "sglang_pr.frontends.DeepConfRuntimeEndpoint backend (or use method='sc')")
    res = offline_vote(traces, method, confidence=confidence, eta=eta, extractor=extractor,
                       answer_regex=answer_regex, include_stopped=include_stopped)
    result = _result_dict(res, traces, method)
    parent = getattr(forks, "src_state", None)  # s.fork(n) remembers the forking state
    for st in [parent, *states] if parent is not None else states:
        st.stream_executor.set_var(f"{name}_vote", result)
    return VoteExpr(name, res.answer, result)
