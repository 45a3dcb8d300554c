"""When ``sglang-pr serve`` should pick the cascade backend on its own (rule declared once).

Rule:
* never when the user chose an attention backend (``attention_backend``,
  ``decode_attention_backend``, ``prefill_attention_backend``): theirs stands;
* never with speculative decoding (``speculative_algorithm``): its target model verifies with
  extend batches, which cascade hands to torch_native anyway, so it would only add a plan step;
* on a machine without a GPU, yes: SGLang's CPU path is torch_native, and cascade *is*
  torch_native for every decode batch without a qualifying fork group, so it costs at most its
  per-batch plan (measured 0.4-1 ms of CPU for 16-64 running requests of 2k tokens) and reads
  each shared prefix once per group instead of once per branch; its extend path computes
  exactly torch_native's attention (a plain prefill makes the same SDPA call) but queries only
  the new tokens, where torch_native queries every cached position again;
* on a GPU, no (opt in with :func:`cascade_server_defaults`, which also turns CUDA graphs
  off with :data:`~sglang_pr.runtime_defaults.NO_CUDA_GRAPH_FLAGS`): SGLang's GPU backends
  (FlashInfer/FA3) with CUDA graphs are faster for ungrouped decode, the cascade plan is
  host-side and cannot be graph-captured, and its Triton path has not been timed on a GPU yet.
"""

from __future__ import annotations

from collections.abc import Collection

from sglang_pr.runtime_defaults import NO_CUDA_GRAPH_FLAGS

from .config import BACKEND_NAME

# ServerArgs fields through which the user chooses the attention path themselves.
_USER_CHOICE_FIELDS = (
    "attention_backend",
    "decode_attention_backend",
    "prefill_attention_backend",
    "speculative_algorithm",
)


def should_use_cascade(user_fields: Collection[str], has_accelerator: bool | None = None) -> bool:
    """True when ``serve`` should add :func:`cascade_server_defaults` to the user's settings.

    Args:
        user_fields: the ServerArgs fields the user set (e.g. ``{"port", "model_path"}``).
        has_accelerator: whether a GPU is present (default: ask the CPU platform plugin).
    """
    if any(f in user_fields for f in _USER_CHOICE_FIELDS):
        return False
    if has_accelerator is None:
        from sglang_pr.cpu_platform import has_accelerator as _probe

        has_accelerator = _probe()
    return not has_accelerator


def cascade_server_defaults(has_accelerator: bool = False) -> dict[str, object]:
    """ServerArgs field -> value that select the backend (a GPU also needs CUDA graphs off)."""
    fields: dict[str, object] = {"attention_backend": BACKEND_NAME}
    if has_accelerator:
        fields.update(NO_CUDA_GRAPH_FLAGS)
    return fields
