"""The training recipe's pieces: targets, loss weights, optimisation, calibration."""

import math

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from sglang_pr.medusa.config import MedusaTrainConfig
from sglang_pr.medusa.heads import MedusaHeads
from sglang_pr.medusa.train import (
    Sequence_,
    featurise,
    head_loss,
    task_prompts,
    topk_accuracy,
    train_loop,
)
from sglang_pr.model import task

torch.set_num_threads(1)


def tiny_llama():
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=30, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                      num_attention_heads=2, num_key_value_heads=1, head_dim=8)
    return LlamaForCausalLM(cfg).eval()


def test_featurise_targets_are_shifted_by_k_plus_one():
    model = tiny_llama()
    seq = Sequence_(ids=[1, 5, 6, 7, 8, 9, 10, 11], prompt_len=3)
    hidden, targets = featurise(model, [seq], num_heads=3, progress=False)
    # positions 2 .. 5 (last prompt token .. len - 3). The base lm_head on h_t predicts
    # ids[t + 1]; head k (1-based) predicts ids[t + k + 1], e.g. t = 2: 8, 9, 10.
    assert targets.tolist() == [[8, 9, 10], [9, 10, 11], [10, 11, -100], [11, -100, -100]]
    full = model.get_decoder()(input_ids=torch.tensor([seq.ids])).last_hidden_state[0]
    torch.testing.assert_close(hidden, full[2:6])


def test_loss_weights_are_point_eight_to_the_k():
    logits = torch.zeros(1, 3, 4)  # uniform: every CE = ln 4
    loss, parts = head_loss(logits, torch.tensor([[0, 1, -100]]), 0.8)
    assert parts[:2] == pytest.approx([math.log(4)] * 2)
    assert math.isnan(parts[2])  # no valid target for head 3 in this batch
    logits = torch.zeros(2, 3, 4)
    loss, _ = head_loss(logits, torch.tensor([[0, 1, 2], [1, 2, 3]]), 0.8)
    assert float(loss) == pytest.approx((0.8 + 0.64 + 0.512) * math.log(4))


def test_train_loop_learns_a_shifted_copy():
    torch.manual_seed(0)
    vocab, hidden = 12, 16
    emb = torch.randn(vocab, hidden)
    tokens = torch.randint(0, vocab, (512,))
    h = emb[tokens]
    targets = torch.stack([(tokens + k + 1) % vocab for k in range(2)], dim=1)
    heads = MedusaHeads(hidden, vocab, 2, base_lm_head=torch.randn(vocab, hidden) * 0.1)
    cfg = MedusaTrainConfig(num_heads=2, epochs=30, batch_size=64, lr=1e-2)
    before = head_loss(heads(h), targets, 0.8)[0].item()
    losses = train_loop(heads, h, targets, cfg, progress=False)
    after = head_loss(heads(h), targets, 0.8)[0].item()
    assert after < 0.2 * before and len(losses) == 30 * 8
    acc = topk_accuracy(heads, h, targets, top_k=2)
    assert acc[0][0] > 0.9 and acc[1][0] > 0.9


def test_topk_accuracy_hand_case():
    heads = MedusaHeads(2, 3, 1, base_lm_head=torch.tensor([[1.0, 0], [0, 1.0], [-1.0, -1.0]]))
    h = torch.tensor([[2.0, 0.0], [0.0, 2.0], [2.0, 1.0]])  # ranks: [0,1,2], [1,0,2], [0,1,2]
    acc = topk_accuracy(heads, h, torch.tensor([[0], [0], [-100]]), top_k=2)
    assert acc == [[0.5, 0.5]]


def test_calibration_prompts_are_disjoint_train_split():
    train, calib = task_prompts(40, 0), task_prompts(10, 0, offset=40)
    assert not set(train) & set(calib)
    assert all(task.parse_prompt(p).split == "train" for p in train + calib)
