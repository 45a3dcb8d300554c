"""Portable CPU platform for SGLang, registered as an out-of-tree (OOT) platform plugin.

Why a platform and not a patch: on a device that is neither CUDA, SGLang's own CPU engine
(which needs an sgl-kernel CPU build PyPI does not ship) nor an OOT platform, SGLang's rotary
embedding falls back to ``vllm._custom_ops``. Declaring the plain CPU as an OOT platform makes
SGLang take its pure-torch paths everywhere, through its own platform interface.

The platform only activates when no accelerator is present, so on a GPU machine SGLang's
defaults are untouched. ``SGLANG_PLATFORM`` still selects explicitly, as SGLang documents.
"""

from __future__ import annotations

# This module must stay import-light: SGLang imports it while it resolves its own platform,
# so importing sglang.srt.platforms here would be circular. The class lives in .platform.
import torch

PLATFORM_QUALNAME = "sglang_pr.cpu_platform.platform:PortableCpuPlatform"


def has_accelerator() -> bool:
    """True when SGLang would pick a GPU-class platform of its own."""
    xpu = getattr(torch, "xpu", None)
    return bool(torch.cuda.is_available() or (xpu is not None and xpu.is_available()))


def activate() -> str | None:
    """Entry point of group ``sglang.srt.platforms``: the class path, or None to stand aside."""
    return None if has_accelerator() else PLATFORM_QUALNAME
