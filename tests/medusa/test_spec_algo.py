"""MEDUSA's server-arg resolution (runs in SGLang's main process before anything is served)."""

from types import SimpleNamespace

import pytest
from transformers import LlamaConfig

from sglang_pr.medusa.checkpoint import save_heads
from sglang_pr.medusa.heads import MedusaHeads
from sglang_pr.medusa.spec_algo import MedusaSpecAlgo, worker_factory


@pytest.fixture
def model_dir(tmp_path):
    d = tmp_path / "model"
    LlamaConfig(vocab_size=30, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                num_attention_heads=2, num_key_value_heads=1).save_pretrained(d)
    return str(d)


def args(model_dir, heads_dir, **kw):
    base = dict(model_path=model_dir, trust_remote_code=False,
                speculative_draft_model_path=heads_dir, speculative_num_draft_tokens=None,
                speculative_num_steps=None, speculative_eagle_topk=None,
                disable_overlap_schedule=False, disable_cuda_graph=False,
                attention_backend="torch_native", prefill_attention_backend=None,
                decode_attention_backend=None)
    return SimpleNamespace(**(base | kw))


def algo():
    return MedusaSpecAlgo("MEDUSA", worker_factory)


def test_resolution_pins_tree_size_and_cpu_backend(model_dir, tmp_path):
    save_heads(tmp_path / "h", MedusaHeads(16, 30, 3), base_model="m",
               tree=[(0,), (0, 0), (1,), (0, 0, 0)], top_k=2)
    sa = args(model_dir, str(tmp_path / "h"))
    algo().handle_server_args(sa)
    assert (sa.speculative_num_draft_tokens, sa.speculative_num_steps) == (5, 3)
    assert sa.speculative_eagle_topk == 1 and sa.disable_overlap_schedule
    assert sa.attention_backend == "medusa_tree"
    sa = args(model_dir, str(tmp_path / "h"), speculative_num_draft_tokens=3,
              attention_backend="triton")
    algo().handle_server_args(sa)
    assert sa.speculative_num_draft_tokens == 3 and sa.attention_backend == "triton"
    assert not algo().has_draft_kv() and not algo().carries_draft_hidden_states()


@pytest.mark.parametrize("hidden,vocab,needle", [(8, 30, "hidden size"), (16, 31, "vocab size")])
def test_wrong_heads_fail_with_the_file_named(model_dir, tmp_path, hidden, vocab, needle):
    save_heads(tmp_path / "h", MedusaHeads(hidden, vocab, 2), base_model="m")
    with pytest.raises(ValueError, match=needle) as e:
        algo().handle_server_args(args(model_dir, str(tmp_path / "h")))
    assert "MEDUSA" in str(e.value) and str(tmp_path / "h") in str(e.value)


def test_cuda_graphs_are_turned_off(model_dir, tmp_path):
    from sglang.srt.model_executor.cuda_graph_config import CudaGraphConfig

    save_heads(tmp_path / "h", MedusaHeads(16, 30, 2), base_model="m")
    sa = args(model_dir, str(tmp_path / "h"), cuda_graph_config=CudaGraphConfig())
    assert sa.cuda_graph_config.decode.backend != "disabled"  # SGLang's default: full graphs
    algo().handle_server_args(sa)
    assert sa.disable_cuda_graph
    assert (sa.cuda_graph_config.decode.backend, sa.cuda_graph_config.prefill.backend) == (
        "disabled", "disabled")


def test_missing_heads_path(model_dir):
    with pytest.raises(ValueError, match="speculative-draft-model-path"):
        algo().handle_server_args(args(model_dir, None))


def test_registered_with_sglang():
    from sglang.srt.speculative.spec_info import SpeculativeAlgorithm

    from sglang_pr.medusa import register

    register([])
    spec = SpeculativeAlgorithm.from_string("medusa")
    assert isinstance(spec, MedusaSpecAlgo) and spec.is_speculative() and not spec.is_ngram()
