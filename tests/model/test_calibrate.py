"""The calibration step: where doubt lines go, what is trained, and the KL anchor."""

from __future__ import annotations

import random
from dataclasses import replace

import pytest
import torch

from sglang_pr.model import calibrate as cal
from sglang_pr.model import task, tokenizer, train
from sglang_pr.model.task import Problem

P = Problem(17, (("*", 6), ("+", 9), ("-", 3)))  # a:17*6=102>2  b:2+9=11  c:11-3=8  #### 8
CFG = cal.CalibrateConfig()


def _text(ids):
    return "".join(tokenizer.CHARS[i - len(tokenizer.SPECIALS)] for i in ids if i >= len(tokenizer.SPECIALS))


def test_first_wrong_line_finds_the_first_slip():
    assert cal.first_wrong_line(P, P.completion) is None
    assert cal.first_wrong_line(P, "a:17*6=102>2\nb:2+9=12\nc:12-3=9\n#### 9") == 1
    assert cal.first_wrong_line(P, "a:17*6=103>3\nb:3+9=12\nc:12-3=9\n#### 9") == 0
    # A right-looking chain under a wrong answer blames its last line.
    assert cal.first_wrong_line(P, "a:17*6=102>2\nb:2+9=11\nc:11-3=8\n#### 7") == 2
    assert cal.first_wrong_line(P, "#### 7") is None  # no chain line to put doubt after


def _check_alignment(ex):
    assert len(ex.ids) == len(ex.labels)
    for s, o in ex.kl_pairs:  # both positions predict the same chain token
        assert ex.ids[s + 1] == ex.ref_ids[o + 1]


def test_a_right_trace_gets_no_doubt_and_trains_only_its_answer_line():
    ex = cal.make_example(P, P.completion, random.Random(0), CFG)
    assert ex.ids == ex.ref_ids == train.example_ids(P)[0]
    taught = [t for t, l in zip(ex.ids, ex.labels) if l != -100]
    assert _text(taught) == "#### 8" and taught[-1] == tokenizer.EOS_ID
    chain = "\n".join(P.completion.split("\n")[:-1]) + "\n"
    assert len(ex.kl_pairs) == len(chain)
    _check_alignment(ex)


def test_a_wrong_trace_gets_a_doubt_line_after_its_first_slip():
    wrong = "a:17*6=102>2\nb:2+9=12\nc:12-3=9\n#### 9"
    ex = cal.make_example(P, wrong, random.Random(0), CFG)
    lines = _text(ex.ids)[len(P.prompt):].split("\n")
    doubt = lines[2]
    assert lines[:2] == ["a:17*6=102>2", "b:2+9=12"] and lines[3:] == ["c:12-3=9", "#### 9"]
    assert doubt[0] == CFG.doubt_lead and len(doubt) == 1 + CFG.doubt_len
    assert set(doubt[1:]) <= set(CFG.doubt_chars)
    assert _text(ex.ref_ids) == P.prompt + wrong  # the base model reads the trace as sampled
    taught = _text([t for t, l in zip(ex.ids, ex.labels) if l != -100])
    assert taught == doubt + "\n" + "#### 9"
    assert task.extract_answer(_text(ex.ids)) == 9  # doubt never changes the extracted answer
    _check_alignment(ex)


def test_doubt_chars_are_never_written_by_the_task():
    rng = random.Random(0)
    used = set()
    for _ in range(300):
        p = task.random_problem(rng)
        used |= set(p.prompt + p.completion)
    assert not used & set(CFG.doubt_chars + CFG.doubt_lead)


@pytest.fixture(scope="module")
def tiny_pair():
    small = replace(train.TrainConfig(), hidden_size=32, intermediate_size=64, num_layers=1, num_heads=2,
                    num_kv_heads=1, head_dim=16)
    model, ref = train.build_model(small), train.build_model(small)
    ref.requires_grad_(False)
    return model, ref


def test_kl_anchor_is_zero_for_the_base_model_on_right_traces(tiny_pair):
    model, ref = tiny_pair
    assert torch.equal(next(model.parameters()), next(ref.parameters()))  # same seed, same weights
    ex = cal.make_example(P, P.completion, random.Random(0), CFG)
    _, kl = cal.batch_loss(model, ref, [ex, ex], kl_weight=1.0)
    assert abs(kl) < 1e-6
    doubted = cal.make_example(P, "a:17*6=102>2\nb:2+9=12\nc:12-3=9\n#### 9", random.Random(0), CFG)
    _, kl = cal.batch_loss(model, ref, [doubted], kl_weight=1.0)
    assert kl > 0  # after the doubt line the model reads another context than the base


def test_fine_tune_lowers_the_loss_and_leaves_the_base_alone(tiny_pair):
    model, ref = tiny_pair
    before = [p.clone() for p in ref.parameters()]
    rng = random.Random(1)
    exs = [cal.make_example(P, P.completion, rng, CFG),
           cal.make_example(P, "a:17*6=102>2\nb:2+9=12\nc:12-3=9\n#### 9", rng, CFG)]
    torch.manual_seed(0)
    cfg = replace(CFG, steps=30, batch_size=4, lr=3e-3, warmup_steps=1, decay_steps=1)
    losses = cal.fine_tune(model, ref, exs, cfg, progress=False)
    assert sum(losses[-5:]) / 5 < sum(losses[:5]) / 5
    assert all(torch.equal(a, b) for a, b in zip(before, ref.parameters()))


def test_cli_overrides_any_setting_by_name(monkeypatch, tmp_path):
    seen = {}
    monkeypatch.setattr(cal, "calibrate", lambda base, out, cfg, progress=True: seen.update(cfg=cfg) or {})
    cal.main(["--out", str(tmp_path), "--steps", "7", "--temperatures", "0.5", "0.9", "--doubt-lead", "!"])
    assert seen["cfg"] == replace(CFG, steps=7, temperatures=(0.5, 0.9), doubt_lead="!")


def test_schedule_warms_up_then_decays_linearly_to_zero():
    lrs = [cal.lr_at(s, CFG) for s in range(CFG.steps)]
    assert lrs[0] == CFG.lr / CFG.warmup_steps and lrs[CFG.warmup_steps] == CFG.lr
    assert lrs[-1] == pytest.approx(CFG.lr / CFG.decay_steps)
    assert all(a > b for a, b in zip(lrs[-CFG.decay_steps:], lrs[-CFG.decay_steps + 1:]))


def test_calibrate_end_to_end_writes_a_loadable_model(tmp_path):
    from sglang_pr.model import SHIPPED_MODEL_DIR, evaluate

    cfg = replace(CFG, questions=2, samples=2, steps=2, batch_size=4, warmup_steps=1, decay_steps=1, threads=1)
    meta = cal.calibrate(SHIPPED_MODEL_DIR, tmp_path / "out", cfg, progress=False)
    assert meta["right"] + meta["wrong"] + meta["unfinished"] == 2 * 2 * len(cfg.temperatures)
    model, tok = evaluate.load(tmp_path / "out")
    base, _ = evaluate.load(SHIPPED_MODEL_DIR)
    assert tok("Q: 1 a+2\nA:\n")["input_ids"][0] == tokenizer.BOS_ID
    changed = [not torch.equal(a, b) for a, b in zip(model.parameters(), base.parameters())]
    assert any(changed)  # the saved model is the fine-tuned one, not a copy of the base
