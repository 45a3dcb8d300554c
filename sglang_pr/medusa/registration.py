"""Everything MEDUSA adds to SGLang, through SGLang's extension points (listed in SUBSYSTEMS).

- ``SpeculativeAlgorithm.register("MEDUSA")`` with a ``CustomSpecAlgo`` subclass: server-arg
  resolution (tree size -> draft-token count, synchronous V2 schedule, tree-masked CPU
  attention) and the worker factory;
- ``register_attention_backend("medusa_tree")`` (+ the CLI choice): torch_native plus a
  tree-masked verify, for CPU;
- narrow hooks (HookRegistry AROUND), pass-through unless their condition holds:
  * ``hf_transformers_utils.get_config`` on a Medusa heads directory returns a small config
    instead of failing: SGLang reads the draft path's config.json with AutoConfig, and Medusa's
    config.json (reference format) has no ``model_type``;
  * ``cpu_compat``: torch stand-ins for two Triton steps of SGLang's speculative KV handling
    when the tensors are on the CPU.

Import-light on purpose: this runs in every SGLang process; the worker loads lazily.
"""

from __future__ import annotations

import logging

from sglang.srt.plugins.hook_registry import HookRegistry, HookType

logger = logging.getLogger(__name__)

ALGORITHM = "MEDUSA"
BACKEND_NAME = "medusa_tree"  # the cascade subsystem registers its own, distinct name
_GET_CONFIG = "sglang.srt.utils.hf_transformers_utils.get_config"


def _get_config_around(original, model, *args, **kwargs):
    from sglang_pr.medusa.checkpoint import is_medusa_dir

    if isinstance(model, str) and is_medusa_dir(model):
        from sglang_pr.medusa.hf_config import medusa_hf_config

        return medusa_hf_config(model)
    return original(model, *args, **kwargs)


def _create_backend(runner):
    from sglang_pr.medusa.attention import MedusaTreeAttnBackend

    return MedusaTreeAttnBackend(runner)


def register(features: list[str]) -> None:
    from sglang.srt.arg_groups.choices import add_attention_backend_choices
    from sglang.srt.layers.attention.attention_registry import (
        ATTENTION_BACKENDS,
        register_attention_backend,
    )
    from sglang.srt.speculative.spec_info import SpeculativeAlgorithm
    from sglang.srt.speculative.spec_registry import get_spec

    from sglang_pr.medusa.cpu_compat import register_cpu_hooks
    from sglang_pr.medusa.spec_algo import MedusaSpecAlgo, worker_factory

    if BACKEND_NAME not in ATTENTION_BACKENDS:
        register_attention_backend(BACKEND_NAME)(_create_backend)
        add_attention_backend_choices([BACKEND_NAME])
    if get_spec(ALGORITHM) is None:
        SpeculativeAlgorithm.register(ALGORITHM, spec_class=MedusaSpecAlgo)(worker_factory)
    HookRegistry.register(_GET_CONFIG, _get_config_around, HookType.AROUND)
    register_cpu_hooks()
    features.append("medusa")
