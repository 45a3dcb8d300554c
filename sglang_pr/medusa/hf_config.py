"""A transformers config object for a Medusa heads directory (reference format has no
``model_type``, so AutoConfig cannot read it; SGLang reads the draft path's config while it
resolves server args)."""

from __future__ import annotations

from transformers import PretrainedConfig

from sglang_pr.medusa.checkpoint import read_heads_config


class MedusaHeadsConfig(PretrainedConfig):
    model_type = "medusa_heads"

    def __init__(self, medusa_num_heads: int = 5, medusa_num_layers: int = 1, **kwargs):
        self.medusa_num_heads = medusa_num_heads
        self.medusa_num_layers = medusa_num_layers
        super().__init__(**kwargs)


def medusa_hf_config(path: str) -> MedusaHeadsConfig:
    data = dict(read_heads_config(path))
    data.pop("model_type", None)
    data.pop("architectures", None)
    data.pop("sglang_pr", None)
    return MedusaHeadsConfig(**data)
