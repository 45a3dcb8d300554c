"""DeepConf subsystem entry: ``register(features)`` is listed in ``sglang_pr.plugin.SUBSYSTEMS``.

Runs in every SGLang process; each hook only fires where its target runs (scheduler hooks in
the scheduler, tokenizer/OpenAI hooks in the main process).
"""

from __future__ import annotations


def register(features: list[str]) -> None:
    from sglang_pr.deepconf import openai_hooks, scheduler_hooks, seeded_sampling, tokenizer_hooks

    scheduler_hooks.register_hooks()
    seeded_sampling.register_hooks()
    tokenizer_hooks.register_hooks()
    openai_hooks.register_hooks()
    features.append("deepconf")
