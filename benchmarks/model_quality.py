"""Model quality measured THROUGH the SGLang server, per model, on a question set.

    python benchmarks/model_quality.py                      # the shipped model, its own task
    python benchmarks/model_quality.py --model-path smollm2-135m --n-questions 100 --samples 16
    python benchmarks/model_quality.py --model-path DIR --dataset FILE.jsonl --extractor boxed

Starts ``sglang-pr serve`` (port 30100-30199) with ``--model-path`` (a name such as
``smollm2-135m``, materialised on first use, or a folder) and sends each question once to POST
/generate with ``n`` samples, many questions concurrently.

* Shipped model, no ``--dataset`` (the recorded top-level keys): held-out questions of its own
  task (``sglang_pr.model.task``) at temperature 1.0, 32 samples, max 160 new tokens, top-20
  logprobs for DeepConf's token confidence, scored with the transformers evaluation's code
  (``sglang_pr.model.evaluate``); every question is also decoded greedily on the server and on
  transformers and the exact token-for-token agreement counted (Medusa's "identical to greedy"
  guarantee is checked against it).
* Any model with ``--dataset FILE.jsonl`` (default for a model other than the shipped one: the
  held-out split of the shipped plain-language set, ``sglang_pr/assets/datasets/``): the
  model's chat template is applied when it has one (``sglang_pr.data.prompts``), answers are
  taken by ``--extractor`` (``boxed | last_number | regex | task``, ``--answer-regex`` for
  regex), and every trace carries DeepConf's lowest-group confidence (window 16) from the
  server's own tracking (``custom_params.deepconf``), scored by ``sglang_pr.data.scoring``:
  pass@1, majority@N, AUROC of right vs wrong traces across questions and within a question.
  ``--from-pool DIR`` scores the traces a frontier run already sampled for this model and
  dataset (``benchmarks/deepconf/bench_frontier.py collect``, its reported split) instead of
  sampling them again: one sampling run serves both benchmarks.

Writes benchmarks/results/model_quality.json: the shipped model's keys at the top level
(pass_at_1, majority_at_32, by_steps, confidence, greedy_agreement, machine, versions, date,
command, ...) and a ``models`` list, one entry per model with the same keys (ENTRY_KEYS); a run
replaces its model's entry and keeps everything else. Also model_quality.png.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Optional

import requests
import torch
from tqdm import tqdm

from sglang_pr.benchmark_meta import run_metadata
from sglang_pr.data import ARITH_WORDS_HELDOUT, DatasetError, Question, load_dataset
from sglang_pr.data.prompts import format_prompts
from sglang_pr.data.scoring import score_samples
from sglang_pr.deepconf.config import SAMPLING, DeepConfConfig
from sglang_pr.deepconf.extract import get_extractor, task_answer
from sglang_pr.deepconf.summary import summarize
from sglang_pr.model import SHIPPED_MODEL_DIR, evaluate, task, tokenizer
from sglang_pr.model.evaluate import Trace
from sglang_pr.models import MODELS, ModelError, resolve_model_path
from sglang_pr.optional import require_or_exit
from sglang_pr.server.launcher import free_port_in, launch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from model_quality_report import SHIPPED_NAME, merge_results, plot  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
PORTS = range(30100, 30200)  # this benchmark's port range (shared machine: stay inside it)
EXTRACTORS = ("boxed", "last_number", "regex", "task")
# The issue's bar for a dataset a model "partly solves" (where voting has room to help).
DATASET_BAR = {"pass_at_1": [0.2, 0.6], "majority_minus_pass_at_1": 0.10}


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
    seed: int = 0  # the server's --random-seed
    # Sampling time budget (s; 0: none): no question starts after it, so a run on a busy box
    # scores as many questions (a prefix of the file) as fit. Dataset runs only.
    max_sampling_s: float = 0.0


# Defaults of a --dataset run (a chat model on plain-language questions): the setting the
# dataset was measured at (benchmarks/smollm2_dataset_check.py). Traces are ~70 tokens.
DATASET_CONFIG = BenchConfig(n_questions=100, samples=16, temperature=0.7, concurrency=6,
                             windows=(16,))
# KV pool of a --dataset run: `concurrency` x `samples` sequences of prompt + max_new_tokens fit
# (SmolLM2 holds 46 KB per token in float32, so the server's 131072 default would be 6 GB).
DATASET_MAX_TOTAL_TOKENS = 32768


@dataclass(frozen=True)
class Plan:
    """What one run measures, from the command line (see :func:`plan_from_args`)."""

    model: str  # the name in the results (a known name, else the folder as given)
    model_dir: Path
    dataset: Optional[Path]  # None: the shipped model's own task
    extractor: str
    answer_regex: Optional[str]
    cfg: BenchConfig
    from_pool: Optional[Path] = None  # score a frontier pool's traces instead of sampling


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


class UsageError(ValueError):
    """A flag combination this benchmark cannot run; one line, exit 2."""


def _positive(name: str, value, minimum=1):
    if value is not None and value < minimum:
        raise UsageError(f"--{name.replace('_', '-')}: must be >= {minimum}, got {value}")
    return value


def plan_from_args(args: argparse.Namespace) -> Plan:
    """The run the flags ask for, checked before any server starts: a bad model name or
    folder (ModelError), a bad dataset line (DatasetError) or a bad flag (UsageError)."""
    model_dir = resolve_model_path(args.model_path)
    shipped = model_dir.resolve() == SHIPPED_MODEL_DIR.resolve()
    model = SHIPPED_NAME if shipped else (args.model_path if args.model_path in MODELS
                                          else str(model_dir))
    dataset = args.dataset if args.dataset is not None or shipped else ARITH_WORDS_HELDOUT
    extractor = args.extractor or ("task" if dataset is None else "last_number")
    if dataset is None and extractor != "task":
        raise UsageError(f"--extractor {extractor}: the shipped task is scored in its own "
                         f"format; pass --dataset FILE.jsonl to choose an extractor")
    if (extractor == "regex") != (args.answer_regex is not None):
        raise UsageError("--answer-regex goes with --extractor regex, and only with it")
    try:
        get_extractor(extractor, args.answer_regex)
    except Exception as e:  # a bad pattern: re.error / regex.error, or a ValueError
        raise UsageError(f"--answer-regex {args.answer_regex!r}: {e}") from None
    for name in ("n_questions", "samples", "max_new_tokens", "concurrency"):
        _positive(name, getattr(args, name))
    _positive("temperature", args.temperature, minimum=0.0)
    _positive("max_sampling_s", args.max_sampling_s, minimum=0.0)
    overrides = {k: getattr(args, k) for k in ("n_questions", "samples", "temperature",
                                                "max_new_tokens", "concurrency", "seed",
                                                "max_sampling_s")
                 if getattr(args, k) is not None}
    cfg = replace(BenchConfig() if dataset is None else DATASET_CONFIG, **overrides)
    if dataset is not None:
        load_dataset(dataset)  # every line checked now, not after the server started
    pool = args.from_pool
    if pool is not None and (dataset is None or not (Path(pool) / "meta.json").is_file()):
        raise UsageError(f"--from-pool {pool}: " + (
            "needs a --dataset run (the shipped task samples its own)" if dataset is None
            else "no frontier pool there (meta.json missing)"))
    return Plan(model, model_dir, dataset, extractor, args.answer_regex, cfg, pool)


def run_task(cfg: BenchConfig, model_dir: Path) -> dict:
    """The shipped model on its own task (the top-level keys of the result file)."""
    problems = task.heldout_set(cfg.n_questions)
    port = free_port_in(PORTS)
    env = {"OMP_NUM_THREADS": str(cfg.server_threads)}
    with launch(model_path=model_dir, port=port, env=env, timeout_s=cfg.server_start_timeout_s) as server:
        start = time.time()
        traces = sample_on_server(server.base_url, problems, cfg)
        sample_s = time.time() - start
        greedy = greedy_agreement(server.base_url, model_dir, problems, cfg)
    result = evaluate.score(problems, [[t.text for t in ts] for ts in traces], [[len(t.token_ids) for t in ts] for ts in traces])
    result[f"majority_at_{cfg.samples}"] = result.pop("majority_at_n")
    result["unfinished_traces"] = sum(not t.finished for ts in traces for t in ts)
    result["confidence"] = [evaluate.confidence_gap(problems, traces, w) for w in cfg.windows]
    within = score_samples([str(p.answer) for p in problems],
                           [[task_answer(t.text) for t in ts] for ts in traces],
                           [[summarize(t.confs, 16).lowest_group for t in ts]
                            for ts in traces])
    result["auroc_within_w16"] = within["auroc_within"]
    result["greedy_agreement"] = greedy
    n_tokens = sum(len(t.token_ids) for ts in traces for t in ts)
    result["sampling"] = {"wall_s": round(sample_s, 1), "generated_tokens": n_tokens, "tokens_per_s": round(n_tokens / sample_s, 1)}
    return result


def sample_dataset(base_url: str, prompts: list[str], cfg: BenchConfig) -> list[list[dict]]:
    """``cfg.samples`` completions per prompt, each {"text", "tokens", "finish", "confidence"}
    (DeepConf's lowest-group confidence at window ``cfg.windows[0]``, tracked by the server)."""
    params = {"temperature": cfg.temperature, "top_p": 1.0, "top_k": -1, "min_p": 0.0,
              "n": cfg.samples, "max_new_tokens": cfg.max_new_tokens,
              # No threshold: track every trace's confidence, stop none early.
              "custom_params": {"deepconf": {"k": cfg.top_logprobs, "window": cfg.windows[0]}}}

    def one(prompt: str) -> list[dict]:
        outs = post_generate(base_url, {"text": prompt, "sampling_params": params},
                             cfg.request_timeout_s)
        if len(outs) != cfg.samples:
            raise RuntimeError(f"asked for {cfg.samples} samples, got {len(outs)}")
        return [{"text": o["text"], "tokens": o["meta_info"]["completion_tokens"],
                 "finish": o["meta_info"]["finish_reason"]["type"],
                 "confidence": (o["meta_info"].get("deepconf") or {}).get("lowest_group")}
                for o in outs]

    return _in_order_until(one, prompts, cfg)


def _in_order_until(one, prompts: list[str], cfg: BenchConfig) -> list[list[dict]]:
    """``one(prompt)`` for the prompts, ``cfg.concurrency`` at a time, in order; once
    ``cfg.max_sampling_s`` has passed no new question starts, and the answers are those of the
    questions that were started (a prefix of the file, so runs stay comparable)."""
    deadline = time.time() + cfg.max_sampling_s if cfg.max_sampling_s else None
    with ThreadPoolExecutor(cfg.concurrency) as pool:
        futures = [pool.submit(one, p) for p in prompts]
        for i, f in enumerate(tqdm(futures, desc="questions", file=sys.stderr)):
            left = None if deadline is None else max(0.0, deadline - time.time())
            if not wait([f], timeout=left).done:
                for g in futures[i:]:
                    g.cancel()  # not yet started: skipped; running ones finish
        return [f.result() for f in futures if not f.cancelled()]


def score_dataset(plan: Plan, questions: list[Question], outputs: list[list[dict]]) -> dict:
    """The entry's scores: ``score_samples`` overall and per question kind, trace lengths."""
    extract = get_extractor(plan.extractor, plan.answer_regex)
    answers = [[extract(o["text"]) for o in outs] for outs in outputs]
    confs = [[o["confidence"] for o in outs] for outs in outputs]
    result = score_samples([q.answer for q in questions], answers, confs)
    kinds: dict[str, list[int]] = {}
    for i, q in enumerate(questions):
        kinds.setdefault(str(q.extra.get("kind", "?")), []).append(i)
    if len(kinds) > 1:
        result["by_kind"] = {k: score_samples([questions[i].answer for i in idx],
                                              [answers[i] for i in idx])
                             for k, idx in sorted(kinds.items())}
    flat = [o for outs in outputs for o in outs]
    result["mean_trace_tokens"] = round(sum(o["tokens"] for o in flat) / len(flat), 1)
    result["truncated_share"] = round(sum(o["finish"] == "length" for o in flat) / len(flat), 4)
    result["traces_without_confidence"] = sum(o["confidence"] is None for o in flat)
    gap = result["majority_at_n"] - result["pass_at_1"]
    result["majority_minus_pass_at_1"] = round(gap, 4)
    lo, hi = DATASET_BAR["pass_at_1"]
    result["meets_dataset_bar"] = (lo <= result["pass_at_1"] <= hi
                                   and gap >= DATASET_BAR["majority_minus_pass_at_1"] - 1e-9)
    return result


def _repo_relative(path: Path) -> str:
    root, path = Path(__file__).resolve().parent.parent, Path(path).resolve()
    return str(path.relative_to(root)) if path.is_relative_to(root) else str(path)


def run_dataset(plan: Plan) -> dict:
    """One ``models`` entry: the model on ``plan.dataset`` (the first n_questions lines)."""
    cfg = plan.cfg
    questions = load_dataset(plan.dataset)[: cfg.n_questions]
    if plan.from_pool is not None:
        outputs, wall_s, meta = pool_outputs(plan, plan.from_pool, questions)
        cfg = replace(cfg, samples=meta["pool"], temperature=meta["temperature"],
                      max_new_tokens=meta["max_new_tokens"])
    else:
        outputs, wall_s = sample_dataset_on_server(plan, questions)
    questions = questions[: len(outputs)]  # the questions answered within max_sampling_s
    scores = score_dataset(plan, questions, outputs)
    entry = {"model": plan.model, "dataset": _repo_relative(plan.dataset), 
             "extractor": plan.extractor if plan.answer_regex is None
             else f"regex:{plan.answer_regex}",
             "temperature": cfg.temperature, "max_new_tokens": cfg.max_new_tokens,
             "confidence": f"lowest_group, window {cfg.windows[0]}",
             "sampling_wall_s": round(wall_s, 1), **scores,
             "source": (f"traces of the frontier pool {plan.from_pool} (bench_frontier.py "
                        "collect), sampled per question in one request, several in flight; "
                        "sampling_wall_s sums their latencies") if plan.from_pool else
             "sampled by this run",
             "prompt": "chat template, the question as the only user message",
             "examples": [{"question": q.question, "answer": q.answer, "sample": o[0]["text"]}
                          for q, o in list(zip(questions, outputs))[:2]]}
    return entry


def sample_dataset_on_server(plan: Plan, questions: list[Question]) -> tuple[list, float]:
    cfg = plan.cfg
    prompts = format_prompts(plan.model_dir, [q.question for q in questions])
    env = {"OMP_NUM_THREADS": str(cfg.server_threads)}
    extra = ["--random-seed", str(cfg.seed), "--max-total-tokens", str(DATASET_MAX_TOTAL_TOKENS)]
    with launch(model_path=plan.model_dir, port=free_port_in(PORTS), env=env, extra_args=extra,
                timeout_s=cfg.server_start_timeout_s) as server:
        start = time.time()
        outputs = sample_dataset(server.base_url, prompts, cfg)
        return outputs, time.time() - start


def pool_outputs(plan: Plan, root: Path, questions: list[Question]) -> tuple[list, float, dict]:
    """A frontier pool's reported split (``bench_frontier.py collect``) as ``sample_dataset``
    outputs: the same traces, scored instead of sampled again. The pool must hold this model on
    this dataset (its ``meta.json``); its questions are the dataset's first lines, in order."""
    from sglang_pr.deepconf.replay import read_pool_split

    meta = json.loads((root / "meta.json").read_text())
    source = meta.get("source")
    if meta.get("model") != plan.model or not isinstance(source, list) or \
            Path(source[0]).resolve() != Path(plan.dataset).resolve():
        raise UsageError(f"--from-pool: {root} holds {meta.get('model')} on {source}, not "
                         f"{plan.model} on {plan.dataset}")
    outputs, wall = [], 0.0
    window = plan.cfg.windows[0]
    for i, (q, rec) in enumerate(zip(questions, read_pool_split(root, "reported",
                                                                 len(questions)))):
        if rec["truth"] != q.answer:
            raise UsageError(f"--from-pool: {root}/reported question {i} answers "
                             f"{rec['truth']!r}, line {i + 1} of {plan.dataset} {q.answer!r}")
        wall += rec["wall_s"]
        outputs.append([{"text": t.text, "tokens": t.tokens,
                         "finish": (t.finish_reason or {}).get("type"),
                         "confidence": summarize(list(t.confidences), window).lowest_group}
                        for t in rec["traces"]])
    if not outputs:
        raise UsageError(f"--from-pool: {root} has no reported questions")
    return outputs, wall, meta


def parse_args(argv: Optional[list[str]]) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model-path", "--model", default=SHIPPED_NAME,
                    help=f"a model name ({', '.join(MODELS)}) or folder (default: the shipped model)")
    ap.add_argument("--dataset", type=Path, default=None,
                    help="JSONL of {question, answer} lines (default: the shipped model's own "
                         "task; for other models the shipped plain-language held-out split)")
    ap.add_argument("--extractor", choices=EXTRACTORS, default=None,
                    help="how an answer is read from a completion (default: task for the "
                         "shipped task, else last_number)")
    ap.add_argument("--answer-regex", default=None, help="pattern for --extractor regex "
                    "(group 1, else the whole match, of the last match)")
    for flag, kind in (("--n-questions", int), ("--samples", int), ("--temperature", float),
                       ("--max-new-tokens", int), ("--concurrency", int), ("--seed", int),
                       ("--max-sampling-s", float)):
        ap.add_argument(flag, type=kind, default=None,
                        help="default: BenchConfig (shipped task) or DATASET_CONFIG (--dataset)")
    ap.add_argument("--from-pool", type=Path, default=None, metavar="DIR",
                    help="score the reported split of a frontier pool (bench_frontier.py "
                    "collect on this model and --dataset) instead of sampling again")
    ap.add_argument("--out", type=Path, default=RESULTS / "model_quality.json")
    return ap.parse_args(argv)


def main(argv: Optional[list[str]] = None) -> int:
    args = parse_args(argv)
    try:
        plan = plan_from_args(args)
    except (ModelError, DatasetError, UsageError) as e:
        print(f"model_quality: error: {e}", file=sys.stderr)
        return 2
    require_or_exit([("matplotlib", "bench", "the plot")])
    torch.set_num_threads(2)
    meta = run_metadata(argv if argv is None else [sys.argv[0], *argv])  # load at the start
    old = json.loads(args.out.read_text()) if args.out.is_file() else None
    top = entry = None
    if plan.dataset is None:
        bar = {"pass_at_1": [0.30, 0.75], "majority_minus_pass_at_1": 0.08,
               "mean_trace_tokens": 40, "max_trace_tokens": 160}
        top = {**run_task(plan.cfg, plan.model_dir), **meta, "model": str(plan.model_dir),
               "config": asdict(plan.cfg), "bar": bar}
    else:
        entry = {**run_dataset(plan), "date": meta["date"], "command": meta["command"],
                 "machine": meta["machine"], "versions": meta["versions"],
                 "config": asdict(plan.cfg), "bar": DATASET_BAR}
    result = merge_results(old, top, entry)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    plot(result, args.out.with_suffix(".png"))
    keys = ("model", "pass_at_1", "majority_at_n", "auroc_within", "auroc_across",
            "mean_trace_tokens", "n_questions", "samples")
    for e in result["models"]:
        print(json.dumps({k: e.get(k) for k in keys}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
