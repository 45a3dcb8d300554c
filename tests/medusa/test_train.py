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
    hidden, targets, roots = featurise(model, [seq], num_heads=3, progress=False)
    # positions 2 .. 5 (last prompt token .. len - 3). The base lm_head on h_t predicts
    # ids[t + 1] (the root); head k (1-based) predicts ids[t + k + 1], e.g. t = 2: 8, 9, 10.
    assert targets.tolist() == [[8, 9, 10], [9, 10, 11], [10, 11, -100], [11, -100, -100]]
    assert roots.tolist() == [7, 8, 9, 10]
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


def test_seen_softmax_rows_remap_targets_and_match_full_logits():
    from sglang_pr.medusa.train import softmax_rows

    targets = torch.tensor([[7, -100], [3, 7], [12, 3]])
    rows, remapped = softmax_rows(targets, "seen")
    assert rows.tolist() == [3, 7, 12]
    assert remapped.tolist() == [[1, -100], [0, 1], [2, 0]]
    assert softmax_rows(targets, "full") == (None, targets)
    heads = MedusaHeads(4, 15, 2, base_lm_head=torch.randn(15, 4), shared_lm_head=True)
    h = torch.randn(3, 4)
    torch.testing.assert_close(heads(h, rows), heads(h)[:, :, rows])


def test_split_prompts_holds_back_or_refuses_overlap():
    from sglang_pr.medusa.train import split_prompts

    cfg = MedusaTrainConfig(calib_prompts=8)
    ps = [f"p{i}" for i in range(20)]
    assert split_prompts(cfg, ps, None) == (ps[:12], ps[12:])
    assert split_prompts(cfg, ps[:10], ps[10:]) == (ps[:10], ps[10:])
    with pytest.raises(ValueError, match="held-out prompts are also"):
        split_prompts(cfg, ps, ps[:3])
    with pytest.raises(ValueError, match="need more than calib_prompts=8"):
        split_prompts(cfg, ps[:8], None)


def test_lm_head_sharing_is_chosen_by_file_size():
    cfg = MedusaTrainConfig()
    assert not cfg.use_shared_lm_head(128, 100)  # the shipped model: own projections, 0.6 MB
    assert cfg.use_shared_lm_head(576, 49152)  # SmolLM2: 5 x 113 MB own projections
    assert not MedusaTrainConfig(shared_lm_head=False).use_shared_lm_head(576, 49152)


def test_local_greedy_generation_matches_unbatched_generate_and_marks_eos():
    """Left-padded batches give each prompt its own greedy continuation; EOS ends a row."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from sglang_pr.medusa.local_generate import generate_greedy
    from sglang_pr.model import SHIPPED_MODEL_DIR

    tok = AutoTokenizer.from_pretrained(SHIPPED_MODEL_DIR)
    model = AutoModelForCausalLM.from_pretrained(SHIPPED_MODEL_DIR, dtype=torch.float32).eval()
    prompts = task_prompts(3, seed=0)
    outs = generate_greedy(model, tok, prompts, 24, batch_size=3, progress=False)
    for p, o in zip(prompts, outs):
        ids = tok(p, return_tensors="pt")["input_ids"]
        want = model.generate(ids, do_sample=False, max_new_tokens=24,
                              pad_token_id=tok.eos_token_id)[0, ids.shape[1]:].tolist()
        assert o["output_ids"] == want[: len(o["output_ids"])] and o["output_ids"]
        stopped = o["meta_info"]["finish_reason"]["type"] == "stop"
        assert stopped == (o["output_ids"][-1] == tok.eos_token_id)
        assert stopped or len(o["output_ids"]) == 24


def test_transformers_generator_is_greedy_only():
    from pydantic import ValidationError

    assert MedusaTrainConfig(generator="transformers", temperatures=(0.0,))
    with pytest.raises(ValidationError, match="greedily"):
        MedusaTrainConfig(generator="transformers")


def test_root_input_learns_what_the_hidden_state_cannot_tell():
    """Targets that depend on the root token only (hidden states are noise): plain heads stay
    near chance, root_input heads learn them."""
    torch.manual_seed(0)
    vocab, hidden, n = 12, 16, 768
    emb = torch.randn(vocab, hidden)
    roots = torch.randint(0, vocab, (n,))
    h = torch.randn(n, hidden)
    targets = torch.stack([(roots + k + 1) % vocab for k in range(2)], dim=1)
    cfg = MedusaTrainConfig(num_heads=2, epochs=20, batch_size=64, lr=1e-2, root_input=True)
    acc = {}
    for root_input in (False, True):
        torch.manual_seed(1)
        heads = MedusaHeads(hidden, vocab, 2, base_lm_head=torch.randn(vocab, hidden) * 0.1,
                            root_input=root_input, base_embedding=emb)
        train_loop(heads, h, targets, cfg, progress=False, roots=roots)
        acc[root_input] = topk_accuracy(heads, h, targets, top_k=1, roots=roots)
    assert acc[True][0][0] > 0.9 and acc[True][1][0] > 0.9
    assert acc[False][0][0] < 0.5


def test_chain_input_learns_what_follows_the_previous_target():
    """Head 2's target is a function of head 1's target, which is noise to everything else:
    only chained heads learn head 2 (teacher forcing; accuracy given the drafts before)."""
    torch.manual_seed(0)
    vocab, hidden, n = 12, 16, 768
    emb = torch.randn(vocab, hidden)
    first = torch.randint(0, vocab, (n,))
    targets = torch.stack([first, (first * 5 + 3) % vocab], dim=1)
    h, roots = torch.randn(n, hidden), torch.randint(0, vocab, (n,))
    acc = {}
    for chain in (False, True):
        torch.manual_seed(1)
        heads = MedusaHeads(hidden, vocab, 2, base_lm_head=torch.randn(vocab, hidden) * 0.1,
                            chain_input=chain, base_embedding=emb)
        cfg = MedusaTrainConfig(num_heads=2, epochs=20, batch_size=64, lr=1e-2,
                                chain_input=chain)
        train_loop(heads, h, targets, cfg, progress=False, roots=roots)
        acc[chain] = topk_accuracy(heads, h, targets, top_k=1, roots=roots)
    assert acc[True][1][0] > 0.9 and acc[False][1][0] < 0.5
    assert acc[True][0][0] < 0.5  # head 1 has nothing to go on either way
