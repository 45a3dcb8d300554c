"""Teach the shipped model to show doubt where its own chain went wrong (issue 13, item 3).

    python -m sglang_pr.model.calibrate --base sglang_pr/assets/tiny-reasoner --out DIR

Why: DeepConf ranks a question's traces by the model's token confidence (-mean log-prob of
the top-k tokens, a property of the *distribution*). On the shipped model the information is
there but the confidence cannot see it: a wrong trace passes through the same uncertain
distributions as a right one and differs only in the token it *sampled*, so within a question
the sampled-token log-likelihood ranks right above wrong traces with AUROC 0.69 / 0.82 (T 0.6 /
1.0) while lowest-group confidence gets 0.53 / 0.58 (``benchmarks/results/model_confidence.json``).

Recipe (self-labelled, like a model that learns to write "hmm, wait" after a slip):

1. sample the base model's own traces on *train-split* questions (``task.distinct_problems``);
2. in every wrong trace, insert a *doubt line* right after its first wrong step: a fixed lead
   (``?``) then ``doubt_len`` letters drawn uniformly from ``doubt_chars`` (letters the task
   never uses, so answers and the answer extractor are unaffected); right traces stay as sampled;
3. fine-tune on those traces: cross-entropy on the doubt lines and answer lines only, and on
   every other completion position a KL to the frozen base model (evaluated on the trace
   without the doubt line), so the chain itself is not re-learned from the model's own slips.

At decode time the model writes the lead where it believes the step it just wrote is wrong; the
letters after it are near-uniform, i.e. several tokens of very low confidence inside one group
window, which is what DeepConf's lowest-group confidence reads.

Variants probed on the tuning questions (unrecorded throwaway runs; team notes): without the KL
anchor the model forgot its task (pass@1 0.63 -> 0.01); with clean task data instead of the
anchor it kept training the task (pass@1 -> 0.91, above the 0.75 bar); a doubt line at the end
of a wrong trace (not after its first wrong step) reached within-AUROC 0.66.
"""

from __future__ import annotations

import argparse
import json
import random
import time
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm import tqdm

from sglang_pr.model import SHIPPED_MODEL_DIR, evaluate, task, tokenizer
from sglang_pr.model.train import encode, lr_at, make_optimizer


@dataclass(frozen=True)
class CalibrateConfig:
    """Every setting of the calibration step (the CLI overrides any of them by name)."""

    questions: int = 600  # train-split questions sampled per temperature
    samples: int = 8  # traces per question
    temperatures: tuple[float, ...] = (0.6, 1.0)  # the frontier's and the quality bar's
    doubt_lead: str = "?"
    doubt_chars: str = "ijklmnopqrstuvwx"  # 16 letters the task never writes
    doubt_len: int = 6
    # Chosen on 100 held-out questions (seed 7; benchmarks/model_confidence.py reports on others):
    # 300 steps at 5e-4 gave within-AUROC 0.69 at T 0.6; 600 at 1e-3 gave 0.63 (0.67 with
    # kl_weight 3, which kept pass@1 closer to the base: 0.57 vs 0.48).
    steps: int = 300
    batch_size: int = 64
    lr: float = 5e-4
    warmup_steps: int = 20
    decay_steps: int = 100  # linear to 0 over the last steps (train.lr_at's schedule)
    final_lr_ratio: float = 0.0
    kl_weight: float = 1.0
    seed: int = 0
    threads: int = 2


@dataclass(frozen=True)
class Example:
    """One fine-tuning row: ``ids`` (with the doubt line), ``labels`` (-100 = no CE; label j
    is the token at j), the base model's input ``ref_ids`` (without the doubt line) and
    ``kl_pairs`` (student position, base position) whose next-token distributions must match."""

    ids: list[int]
    labels: list[int]
    ref_ids: list[int]
    kl_pairs: list[tuple[int, int]] = field(default_factory=list)


def first_wrong_line(problem: task.Problem, text: str) -> int | None:
    """Index of the first chain line of ``text`` that differs from the true chain, or None for
    a right answer. A wrong answer under a right-looking chain blames the last chain line."""
    if task.extract_answer(text) == problem.answer:
        return None
    lines, true = text.split("\n")[:-1], problem.completion.split("\n")[:-1]
    if not lines:
        return None  # nothing before the answer line: no place for a doubt line
    return next((i for i, (a, b) in enumerate(zip(lines, true)) if a != b), len(lines) - 1)


def doubt_line(cfg: CalibrateConfig, rng: random.Random) -> str:
    return cfg.doubt_lead + "".join(rng.choice(cfg.doubt_chars) for _ in range(cfg.doubt_len)) + "\n"


def make_example(problem: task.Problem, text: str, rng: random.Random, cfg: CalibrateConfig) -> Example:
    """The training row of one sampled, finished trace (see the module docstring)."""
    prompt = [tokenizer.BOS_ID] + encode(problem.prompt)
    ids, labels, ref_ids, pairs = list(prompt), [-100] * len(prompt), list(prompt), []
    lines = text.split("\n")
    bad = first_wrong_line(problem, text)
    for i, line in enumerate(lines):
        last = i == len(lines) - 1
        for tok in encode(line + ("" if last else "\n")) + ([tokenizer.EOS_ID] if last else []):
            if last:
                labels.append(tok)  # the answer line: taught (it copies the chain's last value)
            else:
                labels.append(-100)
                pairs.append((len(ids) - 1, len(ref_ids) - 1))  # the chain: anchored to the base
            ids.append(tok)
            ref_ids.append(tok)
        if i == bad:
            doubt = encode(doubt_line(cfg, rng))
            ids += doubt
            labels += doubt
    return Example(ids, labels, ref_ids, pairs)


def sample_examples(model, cfg: CalibrateConfig, progress: bool = True) -> tuple[list[Example], dict]:
    """The base model's own traces on train questions, as examples, and their right/wrong counts."""
    rng = random.Random(f"doubt:{cfg.seed}")
    examples, counts = [], {"right": 0, "wrong": 0, "unfinished": 0}
    for t_index, temperature in enumerate(cfg.temperatures):
        problems = task.distinct_problems("train", cfg.questions, seed=cfg.seed * 100 + t_index + 1)
        traces = evaluate.sample_traces(model, problems, cfg.samples, temperature, seed=cfg.seed + t_index, progress=progress)
        for problem, group in zip(problems, traces):
            for trace in group:
                if not trace.finished:
                    counts["unfinished"] += 1
                    continue
                counts["right" if task.is_correct(trace.text, problem) else "wrong"] += 1
                examples.append(make_example(problem, trace.text, rng, cfg))
    return examples, counts


def _pad(rows: list[list[int]], fill: int) -> tuple[torch.Tensor, torch.Tensor]:
    """[B, L] right-padded rows and their attention mask."""
    out = torch.full((len(rows), max(map(len, rows))), fill, dtype=torch.long)
    mask = torch.zeros_like(out)
    for i, row in enumerate(rows):
        out[i, : len(row)] = torch.tensor(row)
        mask[i, : len(row)] = 1
    return out, mask


def batch_loss(model, ref, batch: list[Example], kl_weight: float) -> tuple[torch.Tensor, float]:
    """CE on labelled tokens + kl_weight * KL(base || model) on the chain; returns (loss, kl)."""
    ids, mask = _pad([e.ids for e in batch], tokenizer.PAD_ID)
    labels, _ = _pad([e.labels for e in batch], -100)
    ref_ids, ref_mask = _pad([e.ref_ids for e in batch], tokenizer.PAD_ID)
    logp = torch.log_softmax(model(input_ids=ids, attention_mask=mask).logits.float(), -1)  # [B, L, V]
    with torch.no_grad():
        ref_logp = torch.log_softmax(ref(input_ids=ref_ids, attention_mask=ref_mask).logits.float(), -1)
    ce = F.nll_loss(logp[:, :-1].reshape(-1, logp.shape[-1]), labels[:, 1:].reshape(-1), ignore_index=-100)
    rows = [r for r, e in enumerate(batch) for _ in e.kl_pairs]
    mine = logp[rows, [s for e in batch for s, _ in e.kl_pairs]]  # [P, V]
    base = ref_logp[rows, [o for e in batch for _, o in e.kl_pairs]]
    kl = (base.exp() * (base - mine)).sum(-1).mean()
    return ce + kl_weight * kl, float(kl.detach())


def fine_tune(model, ref, examples: list[Example], cfg: CalibrateConfig, progress: bool = True) -> list[float]:
    """AdamW over random batches of ``examples`` (train.py's optimizer, its default decay 0.01)."""
    model.train()
    opt = make_optimizer(model, cfg.lr, weight_decay=0.01)
    rng, losses = random.Random(f"calibrate-batches:{cfg.seed}"), []
    for step in tqdm(range(cfg.steps), desc="calibrate", disable=not progress):
        for group in opt.param_groups:
            group["lr"] = lr_at(step, cfg)
        loss, _ = batch_loss(model, ref, [rng.choice(examples) for _ in range(cfg.batch_size)], cfg.kl_weight)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        losses.append(loss.item())
    model.eval()
    return losses


def calibrate(base: Path, out: Path, cfg: CalibrateConfig, progress: bool = True) -> dict:
    """Sample, build, fine-tune and save a calibrated copy of ``base`` in ``out``."""
    import copy
    import shutil

    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    start = time.time()
    model, _ = evaluate.load(base)
    ref = copy.deepcopy(model).requires_grad_(False)  # the frozen base: samples, KL targets
    examples, counts = sample_examples(ref, cfg, progress)
    losses = fine_tune(model, ref, examples, cfg, progress)
    out.mkdir(parents=True, exist_ok=True)
    for f in base.iterdir():  # tokenizer, chat template, generation config, training args
        if f.is_file() and f.name not in ("model.safetensors", "config.json"):
            shutil.copy(f, out / f.name)
    model.save_pretrained(str(out), safe_serialization=True)
    (out / "model.safetensors").chmod(0o644)
    meta = {**asdict(cfg), **counts, "base": str(base), "seconds": round(time.time() - start, 1),
            "final_loss": round(sum(losses[-50:]) / len(losses[-50:]), 5)}
    (out / "calibration_args.json").write_text(json.dumps(meta, indent=2) + "\n")
    return meta


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--base", type=Path, default=SHIPPED_MODEL_DIR)
    ap.add_argument("--out", type=Path, required=True)
    for f in fields(CalibrateConfig):
        kind = type(f.default)
        if kind is tuple:
            ap.add_argument(f"--{f.name.replace('_', '-')}", type=float, nargs="+", default=None)
        else:
            ap.add_argument(f"--{f.name.replace('_', '-')}", type=kind, default=None)
    args = vars(ap.parse_args(argv))
    overrides = {f.name: (tuple(v) if isinstance(v, list) else v) for f in fields(CalibrateConfig)
                 if (v := args[f.name]) is not None}
    meta = calibrate(args["base"], args["out"], replace(CalibrateConfig(), **overrides))
    print(json.dumps(meta, indent=2))


if __name__ == "__main__":
    main()
