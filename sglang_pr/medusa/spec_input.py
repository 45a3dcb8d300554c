"""The SpecInput MEDUSA hands to SGLang: carried drafts between steps, and the verify batch.

It subclasses SGLang's ``NgramVerifyInput`` on purpose: NGRAM is SGLang's other draft-model-free
tree verifier, so GPU attention backends that already serve NGRAM's tree verify (FlashInfer,
Triton: a custom mask over prefix + tree, read through ``generate_attn_arg_prefill``) serve
ours unchanged. On CPU our own backend (``attention.py``) reads ``tree_mask`` instead.

Two roles, one class (like NGRAM's):
- *carry*: between steps, ``head_topk`` [bs, K, top_k] holds the heads' ranked candidates
  computed on each request's last accepted hidden state. filter/merge keep it row-aligned
  with ``batch.reqs`` as requests join and leave.
- *verify*: during the verify forward, the tree tokens, positions and masks.
"""

from __future__ import annotations

from typing import List, Optional

import torch
from sglang.srt.model_executor.forward_batch_info import CaptureHiddenMode
from sglang.srt.speculative.ngram_info import NgramVerifyInput
from sglang.srt.speculative.spec_info import SpecInput, SpecInputType


class MedusaSpecInput(NgramVerifyInput):
    def __init__(
        self,
        *,
        draft_token_num: int,
        head_topk: Optional[torch.Tensor] = None,
        draft_token: Optional[torch.Tensor] = None,
        positions: Optional[torch.Tensor] = None,
        tree_mask: Optional[torch.Tensor] = None,
        custom_mask: Optional[torch.Tensor] = None,
    ):
        # NgramVerifyInput.__init__ insists on a mask or seq lens; set the shared fields here.
        SpecInput.__init__(self, SpecInputType.NGRAM_VERIFY)
        self.draft_token_num = draft_token_num
        self.num_tokens_per_req = draft_token_num
        self.num_tokens_for_logprob_per_req = draft_token_num
        self.head_topk = head_topk  # [bs, K, top_k] int64 (carry role)
        self.draft_token = draft_token  # [bs * n] int64 (verify role)
        self.positions = positions  # [bs * n] int64
        self.tree_mask = tree_mask  # [n, n] bool, the same tree for every request
        self.custom_mask = custom_mask  # GPU backends: flat prefix+tree mask, else None
        self.retrieve_index = self.retrieve_next_token = self.retrieve_next_sibling = None
        self.future_indices = None
        self.new_seq_lens = self.accept_tokens = self.accept_lens = None
        self.capture_hidden_mode = CaptureHiddenMode.FULL
        ref = head_topk if head_topk is not None else draft_token
        self.device = ref.device if ref is not None else torch.device("cpu")

    @classmethod
    def carry(cls, head_topk: torch.Tensor, draft_token_num: int) -> "MedusaSpecInput":
        return cls(draft_token_num=draft_token_num, head_topk=head_topk)

    def filter_batch(
        self, new_indices: torch.Tensor, new_indices_cpu: Optional[List[int]] = None
    ) -> None:
        if self.head_topk is not None:
            self.head_topk = self.head_topk[new_indices.to(self.head_topk.device).long()]

    def merge_batch(self, spec_info: "MedusaSpecInput") -> None:
        if spec_info is None or spec_info.head_topk is None:
            return
        if self.head_topk is None:
            self.head_topk = spec_info.head_topk
        else:
            self.head_topk = torch.cat([self.head_topk, spec_info.head_topk], dim=0)

    def build_gpu_custom_mask(self, seq_lens_cpu: List[int]) -> torch.Tensor:
        """FlashInfer/Triton layout: per request, rows = tree nodes, cols = prefix + tree.

        Flattened row-major per request and concatenated: request b contributes
        n * (prefix_b + n) booleans, prefix columns all True, then ``tree_mask``. Built in one
        pass for the whole batch (no per-request ops). Worked example: n = 2,
        ``tree_mask = [[1 0] [1 1]]``, prefixes [1, 3] give
        ``[1 1 0 | 1 1 1]`` + ``[1 1 1 1 0 | 1 1 1 1 1]`` (``|`` between rows).
        """
        n, dev = self.draft_token_num, self.tree_mask.device
        bs = len(seq_lens_cpu)
        prefix = torch.tensor(seq_lens_cpu, dtype=torch.long, device=dev)  # [bs]
        width = prefix + n  # [bs] columns per row
        total = n * int(sum(seq_lens_cpu)) + n * n * bs  # host-side: no sync
        out = torch.ones(total, dtype=torch.bool, device=dev)  # prefix columns stay True
        # Only the tree block is written: bs * n * n flat indices, not one per mask element.
        start = torch.cumsum(n * width, 0) - n * width  # [bs] first element of each request
        r = torch.arange(n, device=dev)
        idx = (start + prefix)[:, None, None] + r[None, :, None] * width[:, None, None] \
            + r[None, None, :]  # [bs, n, n]: request b, tree row i, tree column j
        out[idx.flatten()] = self.tree_mask.expand(bs, n, n).flatten()
        return out
