"""Declared-once defaults and their validation (settings resolution included)."""

import json

import pytest
from pydantic import ValidationError

from sglang_pr.deepconf.config import SAMPLING
from sglang_pr.medusa import SHIPPED_HEADS_DIR
from sglang_pr.medusa.checkpoint import save_heads
from sglang_pr.medusa.config import (
    DEFAULT_TREE,
    MedusaConfig,
    MedusaSettingsError,
    MedusaTrainConfig,
    get_config_around,
    medusa_hf_config,
    resolve_medusa_config,
)
from sglang_pr.medusa.heads import MedusaHeads


def test_defaults_are_the_anchored_values():
    c = MedusaConfig()
    assert (c.num_heads, c.typical_epsilon, c.typical_delta) == (5, 0.09, 0.3)
    assert c.tree == DEFAULT_TREE and len(c.effective_tree) == len(DEFAULT_TREE)
    assert MedusaTrainConfig().loss_decay == 0.8
    # the project's one generation cap, not a copy of it
    assert MedusaTrainConfig().max_new_tokens == SAMPLING.max_new_tokens


def test_frozen_and_unknown_keys():
    c = MedusaConfig()
    with pytest.raises(ValidationError):
        c.top_k = 3
    with pytest.raises(ValidationError, match="extra"):
        MedusaConfig(epsilon=0.1)


@pytest.mark.parametrize("tree,needle", [
    ([[0, 0]], "parent"), ([[0], [0]], "twice"), ([[0], [12]], "rank outside"),
    ([[0, 0, 0, 0, 0, 0]], "deeper"), ([], "at least one"),
])
def test_bad_trees_name_the_path(tree, needle):
    with pytest.raises(ValidationError, match=needle):
        MedusaConfig(tree=tree)


def test_max_tree_nodes_trims_in_priority_order():
    c = MedusaConfig(max_tree_nodes=4)
    assert c.effective_tree == DEFAULT_TREE[:3]


@pytest.fixture
def heads_dir(tmp_path):
    save_heads(tmp_path, MedusaHeads(8, 10, 3), base_model="m", tree=[(0,), (1,), (0, 0)],
               top_k=2)
    return str(tmp_path)


def test_settings_precedence(heads_dir, tmp_path):
    c = resolve_medusa_config(heads_dir, env="")
    assert c.num_heads == 3 and c.top_k == 2 and c.tree == ((0,), (1,), (0, 0))
    c = resolve_medusa_config(heads_dir, num_draft_tokens=3, env="")
    assert c.effective_tree == ((0,), (1,))
    c = resolve_medusa_config(heads_dir, env=json.dumps({"tree": [[0]], "typical_delta": 0.5}))
    assert c.tree == ((0,),) and c.typical_delta == 0.5
    f = tmp_path / "o.json"
    f.write_text(json.dumps({"typical_epsilon": 0.05}))
    assert resolve_medusa_config(heads_dir, env="@" + str(f)).typical_epsilon == 0.05


def test_default_tree_is_cut_to_the_head_count(tmp_path):
    save_heads(tmp_path, MedusaHeads(8, 10, 2), base_model="m")
    c = resolve_medusa_config(str(tmp_path), env="")
    assert max(len(p) for p in c.tree) == 2


@pytest.mark.parametrize("env,needle", [
    ('{"bogus": 1}', "bogus"), ('{"typical_epsilon": -1}', "typical_epsilon"),
    ("not json", "not valid JSON"), ("[1]", "JSON object"), ('{"tree": [[5]]}', "tree"),
])
def test_bad_settings_are_named(heads_dir, env, needle):
    with pytest.raises(MedusaSettingsError, match=needle):
        resolve_medusa_config(heads_dir, env=env)


def test_missing_heads_path():
    with pytest.raises(MedusaSettingsError, match="speculative-draft-model-path"):
        resolve_medusa_config(None, env="")


# SGLang reads the draft path's config.json; a Medusa heads directory must not break that.
def test_shipped_heads_config_reads_as_a_transformers_config():
    cfg = medusa_hf_config(str(SHIPPED_HEADS_DIR))
    assert cfg.model_type == "medusa_heads"
    assert (cfg.medusa_num_heads, cfg.medusa_num_layers) == (5, 1)


def test_get_config_hook_only_intercepts_medusa_dirs(tmp_path):
    calls = []

    def original(model, *a, **kw):
        calls.append(model)
        return "base-config"

    assert get_config_around(original, str(tmp_path)) == "base-config"  # not a heads dir
    got = get_config_around(original, str(SHIPPED_HEADS_DIR))
    assert got.model_type == "medusa_heads" and calls == [str(tmp_path)]
