"""Portable CPU platform for SGLang, registered as an out-of-tree (OOT) platform plugin.

Why a platform and not a patch: on a device that is neither CUDA, SGLang's own CPU engine
(which needs an sgl-kernel CPU build PyPI does not ship) nor an OOT platform, SGLang's rotary
embedding falls back to ``vllm._custom_ops``. Declaring the plain CPU as an OOT platform makes
SGLang take its pure-torch paths everywhere, through its own platform interface.

The platform only activates when no accelerator is present, so on a GPU machine SGLang's
defaults are untouched. ``SGLANG_PLATFORM`` still selects explicitly, as SGLang documents.

Concept -> file:

* ``platform``        the platform class (CPU server defaults come from ``runtime_defaults``);
* ``spec_kv``         torch stand-ins for two Triton steps of SGLang's speculative KV handling;
* ``seeded_sampling`` opt-in per-request seeds on CPU (``SGLANG_PR_SEEDED_SAMPLING=1``).

Their hooks (pass-through unless the tensors are on the CPU) are the rows of ``HOOKS``.
"""

from __future__ import annotations

# This module must stay import-light: SGLang imports it while it resolves its own platform,
# so importing sglang.srt.platforms here would be circular. The class lives in .platform.
import torch

from sglang_pr.internals import Hook, register_hooks

PLATFORM_QUALNAME = "sglang_pr.cpu_platform.platform:PortableCpuPlatform"


def has_accelerator() -> bool:
    """True when SGLang would pick a GPU-class platform of its own."""
    xpu = getattr(torch, "xpu", None)
    return bool(torch.cuda.is_available() or (xpu is not None and xpu.is_available()))


def activate() -> str | None:
    """Entry point of group ``sglang.srt.platforms``: the class path, or None to stand aside."""
    return None if has_accelerator() else PLATFORM_QUALNAME


# Opt-in per-request seeds on a CPU server (seeded_sampling); the demo and Medusa training set it.
SEEDED_SAMPLING_ENV = "SGLANG_PR_SEEDED_SAMPLING"

HOOKS: tuple[Hook, ...] = (
    Hook("sglang.srt.mem_cache.allocation.assign_req_to_token_pool_func",
         "sglang_pr.cpu_platform.spec_kv:_assign_around", "around"),
    Hook("sglang.srt.mem_cache.memory_pool.MHATokenToKVPool._init_kv_copy_and_warmup",
         "sglang_pr.cpu_platform.spec_kv:_kv_copy_around", "around"),
    Hook("sglang.srt.sampling.sampling_batch_info.SamplingBatchInfo.from_schedule_batch",
         "sglang_pr.cpu_platform.seeded_sampling:_after_from_schedule_batch", "after",
         env=SEEDED_SAMPLING_ENV),
    Hook("sglang.srt.layers.sampler.multinomial_with_seed",
         "sglang_pr.cpu_platform.seeded_sampling:_around_multinomial_with_seed", "around",
         env=SEEDED_SAMPLING_ENV),
)


def register(features: list[str]) -> None:
    """Called by the plugin entry point (not the platform one) in every SGLang process."""
    register_hooks(HOOKS)
    features.append("cpu_hooks")
