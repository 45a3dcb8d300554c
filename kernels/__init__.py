"""Attention kernels and their pure-torch references (installed as ``sglang_pr.kernels``).

Cascade (shared-prefix) decode attention, FlashInfer "recursive attention" style:

* :mod:`.layout` - the work-list (CSR) layout over SGLang's token-slot KV tables;
* :mod:`.reference` - float64 ground truth (flat attention, LSE merge);
* :mod:`.torch_impl` - the CPU path (vectorised torch);
* :mod:`.triton_impl` - the GPU path (Triton; runs on CPU under ``TRITON_INTERPRET=1``);
* :mod:`.cascade` - the public plan/run API, dispatching on the tensors' device;
* :mod:`.extend` - extend (prefill over a cached prefix): new tokens only, shared prefix once.

LSE base at every public interface: natural log. Triton kernels use base 2 inside and
convert on store/load (documented in :mod:`.triton_impl`).
"""

from .cascade import (
    CascadeDecode,
    attention_lse,
    grouped_prefix_attention,
    merge_state,
    resolve_impl,
    suffix_attention,
)
from .extend import CascadeExtend, ExtendRequest
from .layout import WorkList, make_worklist
from .torch_impl import merge_states

__all__ = [
    "CascadeDecode",
    "CascadeExtend",
    "ExtendRequest",
    "WorkList",
    "attention_lse",
    "grouped_prefix_attention",
    "make_worklist",
    "merge_state",
    "merge_states",
    "resolve_impl",
    "suffix_attention",
]
