"""Every place sglang_pr reaches into SGLang's internals, and why SGLang is pinned to 0.5.23.

SGLang's plugin API (``HookRegistry``) patches any dotted name, public or private, and when a
target does not exist it logs and carries on: a renamed method would silently switch a feature
off. So the plugin is pinned to the exact release every target was read from (pyproject.toml),
each subsystem declares its targets in one ``HOOKS`` table of :class:`Hook` rows in its
package ``__init__``, and ``tests/test_internals.py`` resolves every row against the installed
SGLang (``pkgutil.resolve_name``) and fails on a missing one.

Private names (leading underscore) are the fragile ones. Each is used for one reason:

* ``SchedulerInternalStateController._add_memory_usage`` (server): the one place the scheduler
  assembles ``/server_info``'s internal state; we add SGLang's own KV accounting to it.
* ``MHATokenToKVPool._init_kv_copy_and_warmup`` (cpu_platform): sets up a Triton KV copy that a
  CPU has no Triton for; on CPU we switch the pool to SGLang's native move instead.
* ``OpenAIServingBase._convert_to_internal_request`` (deepconf, called, not patched): turns an
  OpenAI request into SGLang's ``GenerateReqInput`` exactly as SGLang does, so a DeepConf group
  behind the OpenAI API samples with the user's own settings (:func:`convert_openai_request`).
* ``OpenAIServingBase._validate_request`` (deepconf, called, not patched): SGLang's own checks
  of an OpenAI request (empty prompt or messages, untrusted chat template, ...). A DeepConf group
  bypasses ``handle_request``, where SGLang runs them, so it runs them itself
  (:func:`validate_openai_request`).
* ``HookRegistry._patched`` (read only): which targets were really patched in a process, so
  ``/sglang_pr/info`` and ``/server_info`` can show every hook took effect.
* ``TokenizerManager._validate_one_request`` (server, before): the one place SGLang validates
  each tokenized request (every route passes it); we refuse token ids outside the vocabulary
  there, which SGLang 0.5.23 lets through to crash the scheduler (``server/guards.py``).
* ``TorchNativeAttnBackend._run_sdpa_forward_decode`` (cascade, called, not patched): the flat
  decode path for batches the cascade plan leaves ungrouped (:func:`run_sdpa_forward_decode`).
"""

from __future__ import annotations

import importlib
import os
import pkgutil
from dataclasses import dataclass
from typing import Any, Callable, Iterable

SGLANG_VERSION = "0.5.23"  # the release every target below was read from (pyproject pins it)

_KINDS = ("before", "after", "around")


@dataclass(frozen=True)
class Hook:
    """One HookRegistry row: patch ``target`` (SGLang, dotted) with ``hook`` (ours).

    ``hook`` is ``"module:function"`` and is imported only when registered, so a package's
    ``HOOKS`` table costs nothing to import. ``env`` names an opt-in switch: the row is only
    registered when that environment variable is on (:func:`env_on`).
    """

    target: str
    hook: str
    kind: str
    env: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in _KINDS:
            raise ValueError(f"Hook.kind must be one of {_KINDS}, got {self.kind!r}")

    def resolve_target(self) -> Any:
        """The SGLang object patched (raises when the pinned SGLang lacks it)."""
        return pkgutil.resolve_name(self.target)

    def resolve_hook(self) -> Callable:
        module, _, name = self.hook.partition(":")
        return getattr(importlib.import_module(module), name)


def env_on(name: str) -> bool:
    """An opt-in switch: ``1``, ``true`` or ``yes`` (any case)."""
    return os.environ.get(name, "0").lower() in ("1", "true", "yes")


def register_hooks(hooks: Iterable[Hook]) -> None:
    """Register each row with SGLang's HookRegistry (opt-in rows only when switched on)."""
    from sglang.srt.plugins.hook_registry import HookRegistry, HookType

    for row in hooks:
        if row.env is None or env_on(row.env):
            HookRegistry.register(row.target, row.resolve_hook(), HookType(row.kind))


def patched_targets() -> list[str]:
    """The targets SGLang's HookRegistry really patched in this process (``_patched``, a
    0.5.23 internal): a row registered for a missing target is logged and left out here."""
    from sglang.srt.plugins.hook_registry import HookRegistry

    return sorted(getattr(HookRegistry, "_patched", ()))


def convert_openai_request(serving, request, raw_request):
    """SGLang's own OpenAI -> GenerateReqInput conversion (private in 0.5.23)."""
    return serving._convert_to_internal_request(request, raw_request)


def validate_openai_request(serving, request):
    """SGLang's own checks of an OpenAI request; an error message or None (private in 0.5.23)."""
    return serving._validate_request(request)


def run_sdpa_forward_decode(backend, *args, **kwargs):
    """torch_native's flat decode over a batch (private in 0.5.23)."""
    return backend._run_sdpa_forward_decode(*args, **kwargs)
