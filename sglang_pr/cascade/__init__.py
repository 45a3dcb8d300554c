"""Cascade (shared-prefix) attention backend for fork groups at decode and at extend.

Concept -> file: ``config`` (settings, ``SGLANG_PR_CASCADE``), ``plan`` (groups found once per
batch from SGLang's request-to-token table), ``extend`` (the same plan for an extend batch over
cached prefixes), ``policy`` (when ``serve`` picks this backend), ``backend`` (the SGLang
attention backend; kernels in ``sglang_pr.kernels``).

``register`` adds the attention backend ``cascade`` to SGLang's registry and to the
``--attention-backend`` choices; it patches nothing (``HOOKS`` is empty). The backend itself
is imported only when SGLang builds it, in the scheduler process.
"""

from __future__ import annotations

from sglang_pr.internals import Hook

from .config import BACKEND_NAME, CascadeConfig, load_config
from .policy import should_use_cascade

__all__ = ["BACKEND_NAME", "HOOKS", "CascadeConfig", "load_config", "register",
           "should_use_cascade"]

HOOKS: tuple[Hook, ...] = ()  # extension points only: the attention registry and CLI choices


def _create_backend(model_runner):
    from .backend import CascadeAttnBackend

    # Parsed here (scheduler process, before any request) so a bad SGLANG_PR_CASCADE stops
    # start-up with the field named instead of failing at the first decode batch.
    return CascadeAttnBackend(model_runner, load_config())


def register(features: list[str]) -> None:
    from sglang.srt.arg_groups.choices import (
        ATTENTION_BACKEND_CHOICES,
        add_attention_backend_choices,
    )
    from sglang.srt.layers.attention.attention_registry import register_attention_backend

    if BACKEND_NAME not in ATTENTION_BACKEND_CHOICES:
        add_attention_backend_choices([BACKEND_NAME])
    register_attention_backend(BACKEND_NAME)(_create_backend)
    features.append("cascade_attention")
