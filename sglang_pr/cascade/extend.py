"""Per-batch plan of an extend (prefill over a cached prefix) for the cascade backend.

Built once per extend batch from what SGLang's ForwardBatch gives: ``req_to_token`` rows,
``extend_prefix_lens`` (cached tokens ``p`` per request) and ``extend_seq_lens`` (new tokens
``e``); the new tokens' rows of q are the requests' runs in batch order.

Shared spans come from the decode planner (:func:`~.plan.build_plan`) run on the cached
prefixes alone: a request is passed with length ``p + 1`` so that the planner, which never
shares a row's last position, only looks at positions ``[0, p)``. A 16-way fork of a cached
prompt then plans one segment ``[0, P)`` holding all 16 requests, whose 16 new tokens become one
multi-row item of a :class:`~sglang_pr.kernels.WorkList` (the prefix read once per layer).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from sglang_pr.kernels import CascadeExtend, ExtendRequest, make_worklist

from .config import CascadeConfig
from .plan import CascadePlan, build_plan


@dataclass
class ExtendState:
    """The plan of one extend batch and the kernel object every layer runs."""

    plan: CascadePlan  # over the cached prefixes (lengths p + 1, see the module docstring)
    kernel: CascadeExtend

    @property
    def groups(self) -> list[int]:
        """Level-0 shared groups' sizes (requests)."""
        return [len(s.rows) for s in self.plan.segments if s.level == 0]


def plan_extend(
    req_to_token: torch.Tensor,
    req_pool_indices: torch.Tensor,
    prefix_lens: list[int],
    extend_lens: list[int],
    cfg: CascadeConfig,
) -> ExtendState:
    """Plan one extend batch.

    Args:
        req_to_token: ``[max_reqs, max_context]`` int32, SGLang's request-to-token-slot table
            (already holding the new tokens' slots, as SGLang writes them before the forward).
        req_pool_indices: ``[B]`` the batch's rows of that table.
        prefix_lens / extend_lens: per request, cached tokens ``p`` and new tokens ``e``.
        cfg: the cost rule for shared spans (as at decode).
    """
    plan = build_plan(req_to_token, req_pool_indices, [p + 1 for p in prefix_lens], cfg)
    q_start = [0]
    for e in extend_lens:
        q_start.append(q_start[-1] + e)
    rows_of = lambda b: range(q_start[b], q_start[b + 1])  # noqa: E731
    device = req_to_token.device
    levels = []
    for lv in range(plan.num_levels):
        segs = [s for s in plan.segments if s.level == lv]
        levels.append(make_worklist(
            [[r for b in s.rows for r in rows_of(b)] for s in segs],
            [plan.table[s.rows[0], s.start : s.end] for s in segs],
            device=device,
        ))
    idx = req_pool_indices.tolist()
    reqs = [
        ExtendRequest(q_start[b], e, p, plan.suffix_start[b], req_to_token[idx[b], : p + e])
        for b, (p, e) in enumerate(zip(prefix_lens, extend_lens))
    ]
    return ExtendState(plan, CascadeExtend(levels, reqs))
