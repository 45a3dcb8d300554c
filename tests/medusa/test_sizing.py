"""Sizing the tree from measured verify cost and held-out head accuracies."""

import json

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from sglang_pr.medusa.heads import MedusaHeads
from sglang_pr.medusa.sizing import choose_tree, measure_step_cost, read_cost
from sglang_pr.medusa.tree import build_sparse_tree, expected_accept_length

ACC = [[0.6, 0.2, 0.1], [0.5, 0.2, 0.1], [0.4, 0.2, 0.1]]


def test_flat_cost_takes_the_largest_tree():
    tree, rows = choose_tree(ACC, {1: 10.0, 4: 10.0, 16: 10.0})
    assert tree == build_sparse_tree(ACC, 16) and [r["nodes"] for r in rows] == [4, 16]


def test_steep_cost_takes_a_small_tree_and_rates_are_right():
    cost = {1: 10.0, 4: 11.0, 16: 40.0}
    tree, rows = choose_tree(ACC, cost)
    assert len(tree) + 1 == 4
    small = build_sparse_tree(ACC, 4)
    want = expected_accept_length(small, ACC) / 11.0 * 10.0
    assert rows[0]["predicted_speedup"] == pytest.approx(want, abs=1e-3)


@pytest.mark.parametrize("data,needle", [({"x": 1}, "cost_ms"), ({"cost_ms": {"4": 1.0}}, "1"),
                                         ({"cost_ms": {"1": 1.0, "2": 0}}, "positive")])
def test_bad_cost_files_are_named(tmp_path, data, needle):
    f = tmp_path / "c.json"
    f.write_text(json.dumps(data))
    with pytest.raises(ValueError, match=needle) as e:
        read_cost(f)
    assert str(f) in str(e.value)


def test_measure_step_cost_gives_one_positive_median_per_size():
    torch.manual_seed(0)
    torch.set_num_threads(1)
    cfg = LlamaConfig(vocab_size=30, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                      num_attention_heads=2, num_key_value_heads=1, head_dim=8)
    model = LlamaForCausalLM(cfg).eval()
    lm = model.lm_head.weight.detach()
    for root_input in (False, True):  # root_input heads get the step's own next token
        heads = MedusaHeads(16, 30, 2, base_lm_head=lm, shared_lm_head=True,
                            root_input=root_input,
                            base_embedding=model.get_input_embeddings().weight.detach()).fuse()
        cost = measure_step_cost(model, heads, (1, 3), prefix_len=8, repeats=2)
        assert set(cost) == {1, 3} and all(v > 0 for v in cost.values())
