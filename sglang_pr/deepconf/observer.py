"""Token confidence inside SGLang's sampling step, through its ``SamplingObserver`` contract.

Flow for one forward (all in the scheduler process):

1. ``Scheduler.run_batch`` hook (:mod:`.scheduler_hooks`) attaches a :class:`RowPlan` — which
   batch rows opted in and their k — to the batch's ``SamplingBatchInfo``;
2. ``ModelRunner.sample`` asks :class:`DeepConfObserver` whether it is active for that
   sampling info and calls ``before_grammar`` with the logits after penalties, before
   temperature, top-p/top-k and grammar masks; the observer computes one confidence per planned
   row on the device (no host sync) and never modifies the logits — sampling is untouched;
3. the result travels as ``logits_output.auxiliary_device_output`` and SGLang copies it to the
   host with the rest of the step's results (:class:`ConfidenceDeviceOutput.copy_to_host`);
4. the batch-result hook hands each request its confidence before ``update_finish_state``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Optional, Sequence

import torch

from sglang_pr.deepconf.confidence import topk_logprob_mean, topk_logprob_prefix_means

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
        # (see scheduler_hooks); nothing is left to do after the tokens are committed.
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
