"""Medusa-head speculative decoding, registered with SGLang as the algorithm ``MEDUSA``.

Laid out like SGLang's ``srt/speculative`` (an algorithm in worker + info + utils):

* ``config``     defaults (``MedusaConfig``, ``MedusaTrainConfig``), their serving-time
                 resolution, and the AutoConfig stand-in for a heads directory;
* ``spec_algo``  the ``CustomSpecAlgo``: server-arg resolution, worker factory;
* ``worker``     one decode step: heads -> tree -> verify -> accept -> KV;
* ``spec_input`` the verify batch's ``SpecInput`` (tree mask, positions);
* ``heads``, ``checkpoint``, ``tree``, ``verify``, ``acceptance``, ``attention`` the parts;
* ``train``      self-distillation (``sglang-pr medusa train``, in ``sglang_pr.cli.medusa``).

DeepConf under Medusa lives in ``sglang_pr.deepconf.speculative``; the CPU stand-ins for
SGLang's speculative KV steps in ``sglang_pr.cpu_platform.spec_kv``.
"""

from __future__ import annotations

from pathlib import Path

from sglang_pr.internals import Hook, register_hooks

# Heads trained for the shipped model (sglang_pr/assets/tiny-reasoner): the default
# --speculative-draft-model-path of the demo and benchmarks.
SHIPPED_HEADS_DIR = Path(__file__).resolve().parent.parent / "assets" / "tiny-reasoner-medusa"

HOOKS: tuple[Hook, ...] = (
    # SGLang reads the draft path's config.json with AutoConfig, and the reference Medusa
    # format has no model_type: a heads directory gets a small config instead of an error.
    Hook("sglang.srt.utils.hf_transformers_utils.get_config",
         "sglang_pr.medusa.config:get_config_around", "around"),
)


def _create_backend(runner):
    from sglang_pr.medusa.attention import MedusaTreeAttnBackend

    return MedusaTreeAttnBackend(runner)


def register(features: list[str]) -> None:
    """Register MEDUSA, the ``medusa_tree`` attention backend (torch_native + tree mask)."""
    from sglang.srt.arg_groups.choices import add_attention_backend_choices
    from sglang.srt.layers.attention.attention_registry import (
        ATTENTION_BACKENDS,
        register_attention_backend,
    )
    from sglang.srt.speculative.spec_info import SpeculativeAlgorithm
    from sglang.srt.speculative.spec_registry import get_spec

    from sglang_pr.medusa.config import ALGORITHM, BACKEND_NAME
    from sglang_pr.medusa.spec_algo import MedusaSpecAlgo, worker_factory

    if BACKEND_NAME not in ATTENTION_BACKENDS:
        register_attention_backend(BACKEND_NAME)(_create_backend)
        add_attention_backend_choices([BACKEND_NAME])
    if get_spec(ALGORITHM) is None:
        SpeculativeAlgorithm.register(ALGORITHM, spec_class=MedusaSpecAlgo)(worker_factory)
    register_hooks(HOOKS)
    features.append("medusa")
