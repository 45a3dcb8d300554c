"""Quality of the shipped model: a fast batched torch sampler and backend-neutral scoring.

The scoring half (``score``, ``confidence_gap``) takes plain completions, so a server-based
benchmark reuses it on what SGLang returned. The sampling half runs the Hugging Face model
directly (left-padded batches, KV cache), recording each sampled token's DeepConf confidence:
-mean log-prob of the top-k tokens, from the untempered distribution (what vLLM/SGLang report
as logprobs). Votes and lowest-group confidences are DeepConf's own (``deepconf.vote``,
``deepconf.summary``), so majority@n breaks ties like the self-consistency path.

    python -m sglang_pr.model.evaluate --model sglang_pr/assets/tiny-reasoner

The bar the shipped model is tuned to (temperature 1.0, top_p 1, no top_k, 32 samples per
question, >= 200 held-out questions): 0.30 <= pass@1 <= 0.75, majority@32 >= pass@1 + 0.08,
mean trace >= 40 tokens (characters + EOS), every trace <= 160 tokens.
"""

from __future__ import annotations

import argparse
import json
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm import tqdm

from sglang_pr.deepconf.config import (
    SAMPLING,
    SHIPPED_MODEL_TEMPERATURE,
    SHIPPED_MODEL_WINDOW,
    DeepConfConfig,
)
from sglang_pr.deepconf.summary import summarize
from sglang_pr.data.scoring import auroc
from sglang_pr.deepconf.vote import weighted_vote
from sglang_pr.model import SHIPPED_MODEL_DIR, task, tokenizer

# Read from the one declaration of each (deepconf/config.py); named here because
# benchmarks/model_quality.py samples on the server with the same values.
MAX_NEW_TOKENS = SAMPLING.max_new_tokens
CONF_TOP_K = DeepConfConfig.model_fields["k"].default
# Group windows of the confidence gap: the shipped model's window and half of it.
GAP_WINDOWS = (SHIPPED_MODEL_WINDOW // 2, SHIPPED_MODEL_WINDOW)


@dataclass
class Trace:
    """One sampled completion: its text, generated ids (EOS included when it ended), confidences
    and each sampled token's untempered log-probability."""

    text: str
    token_ids: list[int]
    confs: list[float] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)

    @property
    def finished(self) -> bool:
        return bool(self.token_ids) and self.token_ids[-1] == tokenizer.EOS_ID


# ----------------------------------------------------------------------------- scoring


def score(problems: list[task.Problem], completions: list[list[str]], lengths: list[list[int]]) -> dict:
    """pass@1, majority@n and mean/max trace length (tokens) over questions, plus per-step-count.

    ``completions[q]`` are the sampled texts for ``problems[q]``; ``lengths[q]`` their token counts.
    """
    per_q_acc, per_q_maj, by_steps = [], [], defaultdict(list)
    for p, texts in zip(problems, completions, strict=True):
        answers = [task.extract_answer(t) for t in texts]
        acc = sum(a == p.answer for a in answers) / len(answers)
        maj = float(weighted_vote(answers).answer == p.answer)
        per_q_acc.append(acc)
        per_q_maj.append(maj)
        by_steps[len(p.ops)].append((acc, maj))
    flat = [n for row in lengths for n in row]
    return {
        "pass_at_1": sum(per_q_acc) / len(per_q_acc),
        "majority_at_n": sum(per_q_maj) / len(per_q_maj),
        "n_samples": len(completions[0]),
        "mean_trace_tokens": sum(flat) / len(flat),
        "max_trace_tokens": max(flat),
        "n_questions": len(problems),
        "by_steps": {
            str(k): {
                "n": len(v),
                "pass_at_1": sum(a for a, _ in v) / len(v),
                "majority": sum(m for _, m in v) / len(v),
            }
            for k, v in sorted(by_steps.items())
        },
    }


def confidence_gap(problems: list[task.Problem], traces: list[list[Trace]], window: int) -> dict:
    """Mean lowest-group confidence (DeepConf's online signal, :func:`summarize`'s: one group of
    all tokens for a trace shorter than ``window``) of correct vs wrong traces, and the AUROC."""
    right, wrong = [], []
    for p, ts in zip(problems, traces, strict=True):
        for t in ts:
            lowest = summarize(t.confs, window).lowest_group
            if lowest is None:  # no tokens, no confidence (a sampled trace has >= 1 token)
                continue
            (right if task.is_correct(t.text, p) else wrong).append(lowest)
    return {
        "window": window,
        "mean_correct": sum(right) / max(1, len(right)),
        "mean_wrong": sum(wrong) / max(1, len(wrong)),
        "auroc": auroc(right, wrong),
    }


# ----------------------------------------------------------------------------- sampling


def load(model_dir: str | Path = SHIPPED_MODEL_DIR):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(model_dir))
    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32)
    return model.eval(), tok


def _left_pad(rows: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """[B, L] ids and attention mask, padded on the left so every row's next token is at -1."""
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), tokenizer.PAD_ID, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, width - len(r) :] = torch.tensor(r)
        mask[i, width - len(r) :] = 1
    return ids, mask


@torch.inference_mode()
def generate_batch(
    model, prompt_ids: list[list[int]], temperature: float, max_new_tokens: int, gen: torch.Generator | None
) -> list[Trace]:
    """Sample (temperature > 0) or greedy-decode (temperature == 0) one completion per row."""
    from transformers import DynamicCache

    ids, mask = _left_pad(prompt_ids)
    batch = ids.shape[0]
    pos = (mask.cumsum(-1) - 1).clamp(min=0)  # [B, L] positions ignore left padding
    cache = DynamicCache()
    out_ids = torch.full((batch, max_new_tokens), tokenizer.PAD_ID, dtype=torch.long)
    confs = torch.zeros((batch, max_new_tokens))
    logprobs = torch.zeros((batch, max_new_tokens))
    done = torch.zeros(batch, dtype=torch.bool)
    n_steps = 0
    for step in range(max_new_tokens):
        logits = model(input_ids=ids, attention_mask=mask, position_ids=pos, past_key_values=cache).logits[:, -1]
        logp = torch.log_softmax(logits.float(), dim=-1)  # [B, V]
        confs[:, step] = -logp.topk(CONF_TOP_K, dim=-1).values.mean(-1)
        if temperature > 0:
            probs = torch.softmax(logits.float() / temperature, dim=-1)
            nxt = torch.multinomial(probs, 1, generator=gen).squeeze(-1)
        else:
            nxt = logits.argmax(-1)
        logprobs[:, step] = logp.gather(-1, nxt[:, None]).squeeze(-1)
        nxt = torch.where(done, tokenizer.PAD_ID, nxt)
        out_ids[:, step] = nxt
        done |= nxt == tokenizer.EOS_ID
        n_steps = step + 1
        if bool(done.all()):
            break
        ids = nxt[:, None]
        mask = torch.cat([mask, torch.ones((batch, 1), dtype=torch.long)], dim=-1)
        pos = pos[:, -1:] + 1
    return [
        _to_trace(out_ids[i, :n_steps].tolist(), confs[i, :n_steps].tolist(), logprobs[i, :n_steps].tolist())
        for i in range(batch)
    ]


def _to_trace(ids: list[int], confs: list[float], logprobs: list[float]) -> Trace:
    if tokenizer.EOS_ID in ids:
        ids = ids[: ids.index(tokenizer.EOS_ID) + 1]
    text = "".join(tokenizer.CHARS[i - len(tokenizer.SPECIALS)] for i in ids if i >= len(tokenizer.SPECIALS))
    return Trace(text=text, token_ids=ids, confs=confs[: len(ids)], logprobs=logprobs[: len(ids)])


def prompt_ids(problem: task.Problem) -> list[int]:
    from sglang_pr.model.train import encode

    return [tokenizer.BOS_ID] + encode(problem.prompt)


def sample_traces(
    model,
    problems: list[task.Problem],
    n: int,
    temperature: float = SHIPPED_MODEL_TEMPERATURE,
    max_new_tokens: int = MAX_NEW_TOKENS,
    rows_per_batch: int = 1024,
    seed: int = 0,
    progress: bool = True,
) -> list[list[Trace]]:
    """``n`` completions per problem (rows batched across problems)."""
    gen = torch.Generator().manual_seed(seed)
    rows = [(qi, prompt_ids(p)) for qi, p in enumerate(problems) for _ in range(n)]
    out: list[list[Trace]] = [[] for _ in problems]
    for start in tqdm(range(0, len(rows), rows_per_batch), desc="sample", disable=not progress):
        chunk = rows[start : start + rows_per_batch]
        traces = generate_batch(model, [r for _, r in chunk], temperature, max_new_tokens, gen)
        for (qi, _), t in zip(chunk, traces):
            out[qi].append(t)
    return out


def greedy(model, problems: list[task.Problem], max_new_tokens: int = MAX_NEW_TOKENS) -> list[Trace]:
    return [ts[0] for ts in sample_traces(model, problems, 1, 0.0, max_new_tokens, progress=False)]


def evaluate(model, n_questions: int = 200, n: int = 32, seed: int = 0, windows=GAP_WINDOWS) -> dict:
    """The full bar on ``heldout_set(n_questions)``: scoring, greedy accuracy and confidence gaps."""
    problems = task.heldout_set(n_questions)
    traces = sample_traces(model, problems, n, seed=seed)
    result = score(problems, [[t.text for t in ts] for ts in traces], [[len(t.token_ids) for t in ts] for ts in traces])
    result["unfinished_traces"] = sum(not t.finished for ts in traces for t in ts)
    result["greedy_accuracy"] = sum(task.is_correct(t.text, p) for t, p in zip(greedy(model, problems), problems)) / len(
        problems
    )
    result["confidence"] = [confidence_gap(problems, traces, w) for w in windows]
    return result


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="Evaluate the tiny reasoner with a transformers sampler.")
    ap.add_argument("--model", type=Path, default=SHIPPED_MODEL_DIR)
    ap.add_argument("--n-questions", type=int, default=200)
    ap.add_argument("--samples", type=int, default=32)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", type=Path, default=None, help="also write the result here")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    model, _ = load(args.model)
    start = time.time()
    result = evaluate(model, args.n_questions, args.samples, args.seed)
    result["eval_seconds"] = round(time.time() - start, 1)
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")


if __name__ == "__main__":
    main()
