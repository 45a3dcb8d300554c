"""Quality of the shipped tiny reasoner, measured THROUGH the SGLang server.

    python benchmarks/model_quality.py [--n-questions 200] [--samples 32] [--model DIR]

Starts ``sglang-pr serve`` (port 30100-30199), sends each held-out question once to POST
/generate with ``n`` samples at temperature 1.0 (top_p 1, top_k off, max 160 new tokens, top-20
logprobs for DeepConf's token confidence), many questions concurrently, and scores the returned
completions with the same code as the transformers evaluation (``sglang_pr.model.evaluate``).
It also decodes every question greedily on the server and on transformers and counts exact
token-for-token agreement (what Medusa's "identical to greedy" guarantee is checked against).

Writes benchmarks/results/model_quality.json (pass_at_1, majority_at_32, mean_trace_tokens,
n_questions, machine, versions, date, command, plus per-step-count accuracy, confidence gap and
greedy agreement) and model_quality.png (accuracy by number of steps).
"""

from __future__ import annotations

import argparse
import json
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import requests
import torch
from tqdm import tqdm

from sglang_pr.benchmark_meta import run_metadata
from sglang_pr.deepconf.config import SAMPLING, DeepConfConfig
from sglang_pr.model import SHIPPED_MODEL_DIR, evaluate, task, tokenizer
from sglang_pr.model.evaluate import Trace
from sglang_pr.optional import require_or_exit
from sglang_pr.server.launcher import free_port_in, launch

RESULTS = Path(__file__).resolve().parent / "results"
PORTS = range(30100, 30200)  # this benchmark's port range (shared machine: stay inside it)


@dataclass(frozen=True)
class BenchConfig:
    n_questions: int = 200
    samples: int = 32
    temperature: float = 1.0
    max_new_tokens: int = SAMPLING.max_new_tokens
    concurrency: int = 8  # questions in flight; each is `samples` sequences on the server
    top_logprobs: int = DeepConfConfig().k  # DeepConf's token confidence, from the top-k
    windows: tuple[int, ...] = (8, 16)  # DeepConf group windows (traces are ~60 tokens)
    request_timeout_s: float = 1800.0
    # SGLang's start (imports, model load, KV pool) takes ~1 min idle but minutes on a loaded CPU.
    server_start_timeout_s: float = 900.0
    # Torch threads in the server. On a CPU shared with other work, 2 OpenMP threads stall at
    # the barrier of every small op (torch_native decode runs thousands per step): measured on
    # the 2-core dev box at load ~10, 25-60 tok/s with 2 threads vs ~2000 tok/s with 1.
    # Greedy output stayed identical to transformers (200/200), so only speed changes.
    server_threads: int = 1


def post_generate(base_url: str, payload: dict, timeout_s: float) -> list[dict]:
    r = requests.post(base_url + "/generate", json=payload, timeout=timeout_s)
    r.raise_for_status()
    out = r.json()
    return out if isinstance(out, list) else [out]


def trace_from_output(out: dict) -> Trace:
    """A server completion as a Trace: ids incl. EOS when it stopped on it, top-k confidences."""
    meta = out["meta_info"]
    ids = list(out.get("output_ids") or [])
    if meta.get("finish_reason", {}).get("type") == "stop" and (not ids or ids[-1] != tokenizer.EOS_ID):
        ids.append(tokenizer.EOS_ID)  # SGLang may strip the matched EOS from output_ids
    # output_top_logprobs: per generated token, [(logprob, token_id, text), ...] top-k.
    confs = [-sum(lp for lp, *_ in top) / len(top) for top in meta.get("output_top_logprobs") or [] if top]
    return Trace(text=out["text"], token_ids=ids, confs=confs)


def sample_on_server(base_url: str, problems: list[task.Problem], cfg: BenchConfig) -> list[list[Trace]]:
    sampling = {
        "temperature": cfg.temperature,
        "top_p": 1.0,
        "top_k": -1,
        "min_p": 0.0,
        "n": cfg.samples,
        "max_new_tokens": cfg.max_new_tokens,
    }

    def one(p: task.Problem) -> list[Trace]:
        payload = {
            "text": p.prompt,
            "sampling_params": sampling,
            "return_logprob": True,
            "top_logprobs_num": cfg.top_logprobs,
        }
        return [trace_from_output(o) for o in post_generate(base_url, payload, cfg.request_timeout_s)]

    with ThreadPoolExecutor(cfg.concurrency) as pool:
        return list(tqdm(pool.map(one, problems), total=len(problems), desc="server samples"))


def greedy_agreement(base_url: str, model_dir: Path, problems: list[task.Problem], cfg: BenchConfig) -> dict:
    """Server greedy vs transformers greedy, token for token (char-level: text + stop = ids)."""
    payload = {
        "text": [p.prompt for p in problems],
        "sampling_params": {"temperature": 0.0, "max_new_tokens": cfg.max_new_tokens},
    }
    server = [trace_from_output(o) for o in post_generate(base_url, payload, cfg.request_timeout_s)]
    model, _ = evaluate.load(model_dir)
    local = evaluate.greedy(model, problems, cfg.max_new_tokens)
    mismatched = [i for i, (s, t) in enumerate(zip(server, local)) if s.text != t.text or s.finished != t.finished]
    return {
        "n": len(problems),
        "identical": len(problems) - len(mismatched),
        "first_mismatches": [
            {"prompt": problems[i].prompt, "server": server[i].text, "transformers": local[i].text}
            for i in mismatched[:3]
        ],
        "server_greedy_accuracy": sum(task.is_correct(s.text, p) for s, p in zip(server, problems)) / len(problems),
    }


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = sorted(result["by_steps"], key=int)
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for key, label in (("pass_at_1", "pass@1"), ("majority", f"majority@{result['n_samples']}")):
        ax.plot([int(s) for s in steps], [result["by_steps"][s][key] for s in steps], marker="o", label=label)
    ax.set_xlabel("operations in the question")
    ax.set_ylabel("accuracy")
    ax.set_ylim(0, 1.02)
    ax.set_title(
        f"tiny-reasoner via SGLang: pass@1 {result['pass_at_1']:.3f}, "
        f"maj@{result['n_samples']} {result['majority_at_32']:.3f}",
        fontsize=9,
    )
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def run(cfg: BenchConfig, model_dir: Path) -> dict:
    problems = task.heldout_set(cfg.n_questions)
    port = free_port_in(PORTS)
    env = {"OMP_NUM_THREADS": str(cfg.server_threads)}
    with launch(model_path=model_dir, port=port, env=env, timeout_s=cfg.server_start_timeout_s) as server:
        start = time.time()
        traces = sample_on_server(server.base_url, problems, cfg)
        sample_s = time.time() - start
        greedy = greedy_agreement(server.base_url, model_dir, problems, cfg)
    result = evaluate.score(problems, [[t.text for t in ts] for ts in traces], [[len(t.token_ids) for t in ts] for ts in traces])
    result["majority_at_32" if cfg.samples == 32 else f"majority_at_{cfg.samples}"] = result.pop("majority_at_n")
    result["unfinished_traces"] = sum(not t.finished for ts in traces for t in ts)
    result["confidence"] = [evaluate.confidence_gap(problems, traces, w) for w in cfg.windows]
    result["greedy_agreement"] = greedy
    n_tokens = sum(len(t.token_ids) for ts in traces for t in ts)
    result["sampling"] = {"wall_s": round(sample_s, 1), "generated_tokens": n_tokens, "tokens_per_s": round(n_tokens / sample_s, 1)}
    return result


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="Shipped-model quality through the SGLang server.")
    ap.add_argument("--model", type=Path, default=SHIPPED_MODEL_DIR)
    ap.add_argument("--n-questions", type=int, default=BenchConfig.n_questions)
    ap.add_argument("--samples", type=int, default=BenchConfig.samples)
    ap.add_argument("--concurrency", type=int, default=BenchConfig.concurrency)
    ap.add_argument("--out", type=Path, default=RESULTS / "model_quality.json")
    args = ap.parse_args(argv)
    cfg = BenchConfig(n_questions=args.n_questions, samples=args.samples, concurrency=args.concurrency)
    if cfg.samples == 32:  # the plot is drawn for the recorded setting only
        require_or_exit([("matplotlib", "bench", "the plot")])
    torch.set_num_threads(2)
    meta = {
        **run_metadata(),
        "model": str(args.model),
        "config": asdict(cfg),
        "bar": {"pass_at_1": [0.30, 0.75], "majority_minus_pass_at_1": 0.08, "mean_trace_tokens": 40, "max_trace_tokens": 160},
    }
    result = {**run(cfg, args.model), **meta}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    if cfg.samples == 32:
        plot(result, args.out.with_suffix(".png"))
    keys = ("pass_at_1", "majority_at_32", "mean_trace_tokens", "max_trace_tokens", "n_questions")
    print(json.dumps({k: result.get(k) for k in keys} | {"greedy_identical": result["greedy_agreement"]["identical"]}))


if __name__ == "__main__":
    main()
