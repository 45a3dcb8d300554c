"""Training data format and model config (no training here: that is minutes of CPU)."""

from __future__ import annotations

import itertools
import random

import torch

from sglang_pr.model import task, tokenizer, train
from sglang_pr.model.task import Problem


def test_encode_matches_the_hf_tokenizer():
    tok = tokenizer.build_tokenizer()
    text = Problem(17, (("*", 6), ("-", 9))).prompt + "a:17*6=102>2\n#### -3"
    assert [tokenizer.BOS_ID] + train.encode(text) == tok(text)["input_ids"]


def test_example_masks_the_prompt_and_ends_with_eos():
    p = Problem(17, (("*", 6), ("+", 9)))
    ids, n_prompt = train.example_ids(p)
    assert ids[0] == tokenizer.BOS_ID and ids[-1] == tokenizer.EOS_ID
    assert n_prompt == 1 + len(p.prompt)
    input_ids, mask, labels = train.collate([(ids, n_prompt), ([1, 40, 2], 2)])
    assert input_ids.shape == mask.shape == labels.shape == (2, len(ids))
    assert (labels[0, :n_prompt] == -100).all() and labels[0, n_prompt:].tolist() == ids[n_prompt:]
    assert labels[1].tolist() == [-100, -100, 2] + [-100] * (len(ids) - 3)
    assert mask[1].sum() == 3 and input_ids[1, 3:].eq(tokenizer.PAD_ID).all()


def test_batches_are_train_split_deterministic_and_mixed():
    take = lambda seed: list(itertools.islice(train.batches(random.Random(seed), 8, pool_batches=4), 8))
    a, b = take(0), take(0)
    assert all(torch.equal(x[0], y[0]) for x, y in zip(a, b))
    tok = tokenizer.build_tokenizer()
    steps = set()
    for input_ids, mask, _ in a:
        for row, m in zip(input_ids, mask):
            text = tok.decode(row[m.bool()].tolist(), skip_special_tokens=True)
            prompt = text[: text.index("A:\n") + 3]
            p = task.parse_prompt(prompt)
            assert p.split == "train" and text == p.prompt + p.completion
            steps.add(len(p.ops))
    assert len(steps) >= 5  # bucketing must not collapse the difficulty mix


def test_model_config_is_gqa_llama_with_long_positions():
    cfg = train.model_config(train.TrainConfig())
    assert cfg.model_type == "llama" and cfg.vocab_size == tokenizer.VOCAB_SIZE
    assert cfg.num_attention_heads == 4 and cfg.num_key_value_heads == 2
    assert cfg.max_position_embeddings >= 8192
    assert (cfg.bos_token_id, cfg.eos_token_id) == (tokenizer.BOS_ID, tokenizer.EOS_ID)


def test_lr_schedule_warms_up_holds_then_decays():
    cfg = train.TrainConfig(steps=1000, warmup_steps=100, decay_steps=200, final_lr_ratio=0.1)
    lrs = [train.lr_at(s, cfg) for s in range(1000)]
    assert 0 < lrs[0] < lrs[50] < lrs[99] == cfg.lr
    assert set(lrs[99:801]) == {cfg.lr}  # stable phase
    assert all(a > b for a, b in zip(lrs[800:], lrs[801:]))  # strictly decaying to the end
    assert abs(lrs[-1] - cfg.lr * cfg.final_lr_ratio) < cfg.lr * 0.01


def test_checkpoints_before_the_decay_do_not_depend_on_the_length():
    # Why --save-every can tune the length: the stable phase is the same for any --steps.
    short, long = train.TrainConfig(steps=600), train.TrainConfig(steps=900)
    stable_end = short.steps - short.decay_steps
    assert [train.lr_at(s, short) for s in range(stable_end)] == [train.lr_at(s, long) for s in range(stable_end)]
