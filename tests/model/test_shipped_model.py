"""The model shipped in sglang_pr/assets/tiny-reasoner loads and actually reasons."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

from sglang_pr.deepconf.config import SAMPLING
from sglang_pr.model import SHIPPED_MODEL_DIR, evaluate, task, tokenizer
from sglang_pr.model.task import Problem

pytestmark = pytest.mark.skipif(
    not (SHIPPED_MODEL_DIR / "model.safetensors").exists(), reason="shipped model not built"
)


@pytest.fixture(scope="module")
def model():
    torch.set_num_threads(2)
    return AutoModelForCausalLM.from_pretrained(str(SHIPPED_MODEL_DIR), dtype=torch.float32).eval()


def test_files_and_size():
    names = {p.name for p in SHIPPED_MODEL_DIR.iterdir()}
    assert {"config.json", "model.safetensors", "generation_config.json", "tokenizer.json"} <= names
    assert sum(p.stat().st_size for p in SHIPPED_MODEL_DIR.iterdir()) < 15 * 2**20


def test_config_is_the_expected_gqa_llama():
    cfg = AutoConfig.from_pretrained(str(SHIPPED_MODEL_DIR))
    assert cfg.model_type == "llama" and cfg.architectures == ["LlamaForCausalLM"]
    assert cfg.vocab_size == tokenizer.VOCAB_SIZE
    assert cfg.max_position_embeddings >= 8192
    assert cfg.num_attention_heads > cfg.num_key_value_heads  # GQA
    assert (cfg.bos_token_id, cfg.eos_token_id) == (tokenizer.BOS_ID, tokenizer.EOS_ID)
    gen = json.loads((SHIPPED_MODEL_DIR / "generation_config.json").read_text())
    assert gen["eos_token_id"] == tokenizer.EOS_ID


def test_weights_are_float32(model):
    assert all(p.dtype == torch.float32 for p in model.parameters())


def test_tokenizer_loads_with_chat_template():
    tok = AutoTokenizer.from_pretrained(str(SHIPPED_MODEL_DIR))
    p = Problem(17, (("*", 6), ("+", 9)))
    assert tok(p.prompt)["input_ids"] == evaluate.prompt_ids(p)
    msgs = [{"role": "user", "content": "17 a*6 b+9"}]
    assert tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True) == "<s>" + p.prompt


def test_greedy_solves_easy_heldout_questions(model):
    # A floor a random or broken model cannot pass: two-step held-out questions, greedy.
    easy = [p for p in task.heldout_set(200) if len(p.ops) == 2][:20]
    traces = evaluate.greedy(model, easy)
    assert all(t.finished and len(t.token_ids) <= SAMPLING.max_new_tokens for t in traces)
    acc = sum(task.is_correct(t.text, p) for t, p in zip(traces, easy)) / len(easy)
    assert acc >= 0.7, [t.text for t in traces]


def test_greedy_trace_follows_the_format(model):
    p = task.heldout_set(5)[0]
    text = evaluate.greedy(model, [p])[0].text
    lines = text.split("\n")
    assert len(lines) == len(p.ops) + 1 and lines[-1].startswith("#### ")
    # The structure is copied from the prompt (what Medusa heads exploit): label, op, operand.
    assert all(line.startswith(lab + ":") and f"{op}{d}=" in line for lab, line, (op, d) in zip(task.LABELS, lines, p.ops))
