"""Train the shipped tiny reasoning model from scratch (seeded, CPU, minutes).

    python -m sglang_pr.model.train --out sglang_pr/assets/tiny-reasoner

A small Llama (GQA: 4 query heads share 2 KV heads, head_dim 64 so GPU attention kernels that
only support the common head sizes accept it) learns the task in ``task.py`` from train-split
questions only. The loss covers the completion and its EOS, never the prompt: the model is
asked to reason, not to invent questions. Training is deliberately short: an under-trained
model makes arithmetic slips at temperature 1.0, which is what self-consistency, DeepConf and
the benchmarks need (see ``evaluate.py`` for the quality bar this is tuned to).

Reproducible: the same seed and thread count give bit-identical weights (checked by training
twice). The shipped model is exactly the default run: 650 steps of 64 questions, ~4.5 min on
2 free CPU cores (much longer when the cores are shared).
"""

from __future__ import annotations

import argparse
import json
import random
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Iterator

import torch
from tqdm import tqdm
from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

from sglang_pr.model import SHIPPED_MODEL_DIR, task, tokenizer

_CHAR_TO_ID = {c: i + len(tokenizer.SPECIALS) for i, c in enumerate(tokenizer.CHARS)}


@dataclass(frozen=True)
class TrainConfig:
    """Every hyper-parameter of the shipped model (the CLI can override steps/seed/batch)."""

    seed: int = 0
    steps: int = 650  # tuned to the bar in evaluate.py; more steps -> too accurate at T=1
    batch_size: int = 64
    # Warm-up, constant, then a linear decay over the last `decay_steps` (warmup-stable-decay).
    # At a constant 3e-3 held-out accuracy swings by +-0.1 between checkpoints 50 steps apart;
    # the decay settles the model. Checkpoints taken before the decay starts are bit-identical
    # to a run with that many --steps and decay_steps=0, which is how the length was tuned.
    lr: float = 3e-3
    warmup_steps: int = 100
    decay_steps: int = 200
    final_lr_ratio: float = 0.1
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    hidden_size: int = 128
    intermediate_size: int = 384
    num_layers: int = 4
    num_heads: int = 4
    num_kv_heads: int = 2
    head_dim: int = 64
    # Far beyond the task's ~140 tokens: downstream cascade/long-prefix work needs room.
    max_position_embeddings: int = 8192
    rope_theta: float = 10000.0
    threads: int = 2


def model_config(cfg: TrainConfig) -> LlamaConfig:
    return LlamaConfig(
        vocab_size=tokenizer.VOCAB_SIZE,
        hidden_size=cfg.hidden_size,
        intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.num_layers,
        num_attention_heads=cfg.num_heads,
        num_key_value_heads=cfg.num_kv_heads,
        head_dim=cfg.head_dim,
        max_position_embeddings=cfg.max_position_embeddings,
        rope_theta=cfg.rope_theta,
        rms_norm_eps=1e-5,
        tie_word_embeddings=False,
        bos_token_id=tokenizer.BOS_ID,
        eos_token_id=tokenizer.EOS_ID,
        pad_token_id=tokenizer.PAD_ID,
        dtype="float32",
    )


def encode(text: str) -> list[int]:
    """Same ids as the HF tokenizer without BOS (tested against it); fast in the data loop."""
    return [_CHAR_TO_ID[c] for c in text]


def example_ids(problem: task.Problem) -> tuple[list[int], int]:
    """(BOS + prompt + completion + EOS, number of leading tokens excluded from the loss)."""
    prompt = [tokenizer.BOS_ID] + encode(problem.prompt)
    return prompt + encode(problem.completion) + [tokenizer.EOS_ID], len(prompt)


def train_problem(rng: random.Random) -> task.Problem:
    while True:
        p = task.random_problem(rng)
        if p.split == "train":
            return p


def collate(examples: list[tuple[list[int], int]]) -> tuple[torch.Tensor, ...]:
    """Right-padded (input_ids, attention_mask, labels), each [batch, max_len]."""
    batch, max_len = len(examples), max(len(ids) for ids, _ in examples)
    input_ids = torch.full((batch, max_len), tokenizer.PAD_ID, dtype=torch.long)
    mask = torch.zeros((batch, max_len), dtype=torch.long)
    labels = torch.full((batch, max_len), -100, dtype=torch.long)
    for row, (ids, n_prompt) in enumerate(examples):
        input_ids[row, : len(ids)] = torch.tensor(ids)
        mask[row, : len(ids)] = 1
        labels[row, n_prompt : len(ids)] = torch.tensor(ids[n_prompt:])
    return input_ids, mask, labels


def batches(rng: random.Random, batch_size: int, pool_batches: int = 16) -> Iterator[tuple[torch.Tensor, ...]]:
    """Endless batches of train-split examples, bucketed by length.

    Lengths range ~25..135 tokens; padding a random batch to its longest row wastes ~40 % of
    the compute (the budget here is a shared 2-core CPU). So a pool of ``pool_batches`` batches
    is sorted by length, cut into batches and served in random order: each batch is nearly
    pad-free while the stream as a whole keeps the uniform mix of 2..8-step questions.
    """
    while True:
        pool = sorted((example_ids(train_problem(rng)) for _ in range(batch_size * pool_batches)), key=lambda e: len(e[0]))
        chunks = [pool[i : i + batch_size] for i in range(0, len(pool), batch_size)]
        rng.shuffle(chunks)
        yield from (collate(c) for c in chunks)


def lr_at(step: int, cfg: TrainConfig) -> float:
    warm = min(1.0, (step + 1) / cfg.warmup_steps)
    left = cfg.steps - step  # steps still to take, this one included
    if cfg.decay_steps <= 0 or left > cfg.decay_steps:
        return cfg.lr * warm
    frac = (cfg.decay_steps - left) / cfg.decay_steps  # 0 at the first decay step
    return cfg.lr * warm * (1 - (1 - cfg.final_lr_ratio) * frac)


def build_model(cfg: TrainConfig) -> LlamaForCausalLM:
    torch.manual_seed(cfg.seed)
    model = LlamaForCausalLM(model_config(cfg))
    return model.to(torch.float32)


def make_optimizer(model: LlamaForCausalLM, lr: float, weight_decay: float) -> torch.optim.AdamW:
    """AdamW; norm gains and biases are not decayed (standard; decaying RMSNorm gains hurts
    tiny models). Also the calibration fine-tune's (``calibrate.py``)."""
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    return torch.optim.AdamW(
        [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=lr,
        betas=(0.9, 0.98),
    )


def train(cfg: TrainConfig, on_checkpoint=None, every: int = 0) -> tuple[LlamaForCausalLM, list[float]]:
    """Train; ``on_checkpoint(model, step)`` is called every ``every`` steps (tuning aid)."""
    torch.set_num_threads(cfg.threads)
    model = build_model(cfg)
    model.train()
    opt = make_optimizer(model, cfg.lr, cfg.weight_decay)
    data = batches(random.Random(f"train-data:{cfg.seed}"), cfg.batch_size)
    losses: list[float] = []
    bar = tqdm(range(cfg.steps), desc="train", unit="step")
    for step in bar:
        for group in opt.param_groups:
            group["lr"] = lr_at(step, cfg)
        input_ids, mask, labels = next(data)
        loss = model(input_ids=input_ids, attention_mask=mask, labels=labels).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        losses.append(loss.item())
        if step % 20 == 0:
            bar.set_postfix(loss=f"{sum(losses[-20:]) / len(losses[-20:]):.4f}")
        if every and on_checkpoint and (step + 1) % every == 0 and step + 1 < cfg.steps:
            model.eval()
            on_checkpoint(model, step + 1)
            model.train()
    model.eval()
    return model, losses


def save(model: LlamaForCausalLM, out: Path, cfg: TrainConfig, meta: dict) -> None:
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(out), safe_serialization=True)
    # transformers writes the weights 0600; as package data they must be readable by any user.
    (out / "model.safetensors").chmod(0o644)
    # Only ids here: sampling defaults are the caller's choice (SGLang would otherwise adopt them).
    GenerationConfig(
        bos_token_id=tokenizer.BOS_ID, eos_token_id=tokenizer.EOS_ID, pad_token_id=tokenizer.PAD_ID
    ).save_pretrained(str(out))
    tokenizer.save(out)
    (out / "training_args.json").write_text(json.dumps({**asdict(cfg), **meta}, indent=2) + "\n")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=SHIPPED_MODEL_DIR)
    ap.add_argument("--steps", type=int, default=TrainConfig.steps)
    ap.add_argument("--seed", type=int, default=TrainConfig.seed)
    ap.add_argument("--batch-size", type=int, default=TrainConfig.batch_size)
    ap.add_argument("--decay-steps", type=int, default=TrainConfig.decay_steps)
    ap.add_argument("--save-every", type=int, default=0, help="also save OUT/step-N (for tuning)")
    args = ap.parse_args(argv)
    cfg = replace(
        TrainConfig(), steps=args.steps, seed=args.seed, batch_size=args.batch_size, decay_steps=args.decay_steps
    )
    start = time.time()

    def checkpoint(model: LlamaForCausalLM, step: int) -> None:
        meta = {"train_seconds": round(time.time() - start, 1), "checkpoint_step": step}
        save(model, args.out / f"step-{step}", cfg, meta)

    model, losses = train(cfg, checkpoint, args.save_every)
    elapsed = time.time() - start
    tail = losses[-50:]
    meta = {"train_seconds": round(elapsed, 1), "final_loss": round(sum(tail) / len(tail), 5)}
    save(model, args.out, cfg, meta)
    print(f"saved {args.out} ({elapsed / 60:.1f} min, final loss {meta['final_loss']:.4f})")


if __name__ == "__main__":
    main()
