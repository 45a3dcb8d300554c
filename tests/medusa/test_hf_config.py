"""SGLang reads the draft path's config.json; a Medusa heads directory must not break that."""

from sglang_pr.medusa import SHIPPED_HEADS_DIR
from sglang_pr.medusa.hf_config import medusa_hf_config
from sglang_pr.medusa.registration import _get_config_around


def test_shipped_heads_config_reads_as_a_transformers_config():
    cfg = medusa_hf_config(str(SHIPPED_HEADS_DIR))
    assert cfg.model_type == "medusa_heads"
    assert (cfg.medusa_num_heads, cfg.medusa_num_layers) == (5, 1)


def test_get_config_hook_only_intercepts_medusa_dirs(tmp_path):
    calls = []

    def original(model, *a, **kw):
        calls.append(model)
        return "base-config"

    assert _get_config_around(original, str(tmp_path)) == "base-config"  # not a heads dir
    got = _get_config_around(original, str(SHIPPED_HEADS_DIR))
    assert got.model_type == "medusa_heads" and calls == [str(tmp_path)]
