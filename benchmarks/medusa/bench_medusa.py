"""Plain decoding vs MEDUSA on a model, side by side in one run, through the server.

    python benchmarks/medusa/bench_medusa.py                 # shipped model + shipped heads
    python benchmarks/medusa/bench_medusa.py --prompts 16 --rounds 2
    python benchmarks/medusa/bench_medusa.py --model-path smollm2-135m --prompts 16 \
        --max-new-tokens 64 --modes greedy                   # SmolLM2 + its shipped heads

Rows carry ``"model"`` (``tiny-reasoner`` for the shipped model, else the name given); a run
replaces its own model's rows in the output file and keeps the other models'. Heads default to
``sglang_pr/assets/<model>-medusa``; prompts to the shipped task's held-out split (shipped
model) or that heads directory's ``eval_prompts.jsonl`` (held out from head training), with
the model's chat template applied.

One server at a time (this machine has 2 cores): ``--rounds`` times, a plain server runs every
configuration (greedy / temperature 1.0 x batch 1 / 8), is stopped, then a MEDUSA server runs
the same; alternating rounds spread a change in the machine's load over both methods.

Per configuration: the same held-out task prompts; batch 1 = one request at a time, batch 8 =
groups of 8 sent in one call. tokens_per_s = completion tokens / wall time (end to end: prefill,
HTTP and tokenizer included); batch 1 is streamed and also gives decode_tokens_per_s (tokens
after the first chunk / time from the first to the last chunk), whose ratio is the "CPU decode
speedup" of the targets; server_cpu_ms_per_token (CPU time of the server's processes per
generated token, from /proc) is reported beside tokens/s because wall time on a shared 2-core
machine swings with other sessions' load, CPU time per token much less;
accept_len = mean tokens emitted per verify step = (accepted drafts + bonus) / verify steps,
from SGLang's own per-request counters; identical_to_plain compares the greedy output token
ids (the texts where a server returns no ids). Writes ``benchmarks/results/medusa.json``
and ``benchmarks/results/medusa.png``.
Targets: shipped model (issue 5) greedy batch-1 acceptance >= 2.5 tokens/step, CPU batch-1
decode speedup >= 1.8x; SmolLM2 (issue 12) >= 2.0 tokens/step and >= 1.5x; greedy output
identical to plain for both.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import requests
import torch

from sglang_pr.benchmark_meta import run_metadata
from sglang_pr.deepconf.config import SAMPLING
from sglang_pr.data.prompts import format_prompts
from sglang_pr.medusa import SHIPPED_HEADS_DIR
from sglang_pr.medusa.prompt_file import read_prompt_file
from sglang_pr.model import SHIPPED_MODEL_DIR, task
from sglang_pr.models import resolve_model_path
from sglang_pr.optional import require_or_exit
from sglang_pr.server.launcher import launch, server_cpu_seconds

RESULTS = Path(__file__).resolve().parents[1] / "results"
# Optional modules this benchmark needs, checked before any work (module, extra, what for).
NEEDS = (("matplotlib", "bench", "the plot"), ("psutil", "bench", "server CPU times"))
MODES = {"greedy": 0.0, "sample": 1.0}
BATCHES = (1, 8)
SHIPPED = "tiny-reasoner"
TARGETS = {SHIPPED: {"greedy_b1_accept_len": 2.5, "cpu_b1_speedup": 1.8},
           "*": {"greedy_b1_accept_len": 2.0, "cpu_b1_speedup": 1.5}}  # issue 12, real models


def _stream_one(url: str, prompt: str, params: dict) -> tuple[dict, float, float, int]:
    """One streamed request: (final output, t of first chunk, t of last chunk, tokens in the
    first chunk). Decode time = last - first chunk: prefill and the request's fixed HTTP /
    tokenizer cost are outside it."""
    first_t = last_t = None
    first_tokens, final = 0, None
    with requests.post(url + "/generate", json={"text": prompt, "sampling_params": params,
                                                "stream": True}, stream=True,
                       timeout=1800) as r:
        r.raise_for_status()
        for line in r.iter_lines():
            if not line.startswith(b"data:") or line.strip() == b"data: [DONE]":
                continue
            last_t = time.perf_counter()
            final = json.loads(line[5:])
            if first_t is None:
                first_t, first_tokens = last_t, final["meta_info"]["completion_tokens"]
    return final, first_t, last_t, first_tokens


def run_workload(url: str, prompts: list[str], temperature: float, batch: int,
                 max_new_tokens: int, seed: int, procs: tuple = ()) -> dict:
    """Send the prompts in groups of ``batch``; totals and per-request texts/counters.

    Batch 1 is streamed, so its decode rate can be read apart from the per-request costs
    (prefill, HTTP, tokenizer): decode_tokens / decode_s over the first..last chunk spans.
    """
    texts, ids, tokens, verify, drafts, wall = [], [], 0, 0, 0, 0.0
    decode_tokens, decode_s = 0, 0.0
    cpu0 = server_cpu_seconds(procs)
    for start in range(0, len(prompts), batch):
        group = prompts[start : start + batch]
        params = [{"temperature": temperature, "max_new_tokens": max_new_tokens,
                   "sampling_seed": seed + start + i} for i in range(len(group))]
        t0 = time.perf_counter()
        if batch == 1:
            out, t_first, t_last, first_tokens = _stream_one(url, group[0], params[0])
            outs = [out]
            decode_tokens += out["meta_info"]["completion_tokens"] - first_tokens
            decode_s += t_last - t_first
        else:
            r = requests.post(url + "/generate",
                              json={"text": group, "sampling_params": params}, timeout=1800)
            r.raise_for_status()
            outs = r.json()
        wall += time.perf_counter() - t0
        for o in outs:
            m = o["meta_info"]
            texts.append(o["text"])
            ids.append(o.get("output_ids"))
            tokens += m["completion_tokens"]
            verify += m.get("spec_verify_ct", 0)
            drafts += m.get("spec_num_correct_drafts", 0)
    cpu1 = server_cpu_seconds(procs)
    return {"texts": texts, "ids": ids, "tokens": tokens, "wall_s": wall, "verify_steps": verify,
            "accepted_drafts": drafts, "decode_tokens": decode_tokens, "decode_s": decode_s,
            "server_cpu_s": cpu1[0] - cpu0[0], "scheduler_cpu_s": cpu1[1] - cpu0[1]}


def _outputs(part: dict) -> list:
    """What greedy identity compares: token ids when the server returned them, else texts."""
    return part["ids"] if all(i is not None for i in part["ids"]) else part["texts"]


def summarise(model, method, mode, batch, device, parts: list[dict], plain_out) -> dict:
    tokens = sum(p["tokens"] for p in parts)
    wall = sum(p["wall_s"] for p in parts)
    verify = sum(p["verify_steps"] for p in parts)
    row = {"model": model, "method": method, "mode": mode, "batch": batch, "device": device,
           "tokens_per_s": tokens / wall, "completion_tokens": tokens, "wall_s": wall,
           "rounds": len(parts)}
    for key in ("server_cpu_s", "scheduler_cpu_s"):
        row[key.removesuffix("_s") + "_ms_per_token"] = 1e3 * sum(p[key] for p in parts) / tokens
    decode_s = sum(p["decode_s"] for p in parts)
    if decode_s > 0:
        row["decode_tokens_per_s"] = sum(p["decode_tokens"] for p in parts) / decode_s
    if method == "plain":
        row["accept_len"] = 1.0
        row["identical_to_plain"] = None
    else:
        row["accept_len"] = (sum(p["accepted_drafts"] for p in parts) + verify) / max(verify, 1)
        row["verify_steps"] = verify
        row["identical_to_plain"] = (all(_outputs(p) == plain_out for p in parts)
                                     if mode == "greedy" else None)
    return row


def run_server(method: str, args, prompts: list[str]) -> dict:
    """Start one server, run every configuration on it, stop it: {(mode, batch): workload}."""
    # Plain runs on torch_native, the attention path MEDUSA's CPU backend extends (serve would
    # otherwise pick cascade for a plain CPU server).
    extra = ["--attention-backend", "torch_native"] if method == "plain" else [
        "--speculative-algorithm", "MEDUSA", "--speculative-draft-model-path", str(args.heads)]
    out = {}
    with launch(model_path=str(args.model_dir), port=args.port, extra_args=extra,
                env={"OMP_NUM_THREADS": "1"}, timeout_s=900) as server:
        run_workload(server.base_url, prompts[:2], 0.0, 1, 16, args.seed)  # warm-up one-offs
        procs = tuple(server.processes())
        for mode in args.modes:
            for batch in BATCHES:
                temp = MODES[mode]
                out[(mode, batch)] = run_workload(server.base_url, prompts, temp, batch,
                                                  args.max_new_tokens, args.seed, procs)
                w = out[(mode, batch)]
                print(f"{method:6s} {mode:6s} b{batch}: {w['tokens'] / w['wall_s']:7.1f} tok/s",
                      flush=True)
    return out


def bench(args) -> list[dict]:
    device = "cuda" if torch.cuda.is_available() else "cpu"
    prompts = bench_prompts(args)
    got: dict[str, list[dict]] = {"plain": [], "medusa": []}
    for _ in range(args.rounds):
        for method in ("plain", "medusa"):
            got[method].append(run_server(method, args, prompts))
    rows = []
    for mode in args.modes:
        for batch in BATCHES:
            parts = {m: [r[(mode, batch)] for r in got[m]] for m in got}
            plain_out = _outputs(parts["plain"][0])
            p_row = summarise(args.model, "plain", mode, batch, device, parts["plain"], plain_out)
            m_row = summarise(args.model, "medusa", mode, batch, device, parts["medusa"],
                              plain_out)
            m_row["speedup"] = m_row["tokens_per_s"] / p_row["tokens_per_s"]
            m_row["cpu_speedup"] = (p_row["server_cpu_ms_per_token"]
                                    / m_row["server_cpu_ms_per_token"])
            m_row["scheduler_cpu_speedup"] = (p_row["scheduler_cpu_ms_per_token"]
                                              / m_row["scheduler_cpu_ms_per_token"])
            if "decode_tokens_per_s" in m_row:
                m_row["decode_speedup"] = (m_row["decode_tokens_per_s"]
                                           / p_row["decode_tokens_per_s"])
            rows += [p_row, m_row]
            dec = (f", decode {m_row['decode_speedup']:.2f}x" if "decode_speedup" in m_row
                   else "")
            print(f"{mode:6s} b{batch}: plain {p_row['tokens_per_s']:7.1f} tok/s | medusa "
                  f"{m_row['tokens_per_s']:7.1f} tok/s ({m_row['speedup']:.2f}x{dec}, CPU "
                  f"time {m_row['cpu_speedup']:.2f}x, scheduler "
                  f"{m_row['scheduler_cpu_speedup']:.2f}x), accept "
                  f"{m_row['accept_len']:.2f}, identical {m_row['identical_to_plain']}",
                  flush=True)
    return rows


def bench_prompts(args) -> list[str]:
    """The shipped task's held-out prompts, or a JSONL of chat prompts (template applied)."""
    if args.prompts_file is None and args.model == SHIPPED:
        return [p.prompt for p in task.heldout_set(args.prompts, seed=args.seed)]
    path = Path(args.prompts_file or Path(args.heads) / "eval_prompts.jsonl")
    return format_prompts(args.model_dir, read_prompt_file(path)[: args.prompts])


def check_targets(rows: list[dict], model: str) -> dict:
    m = {(r["mode"], r["batch"]): r for r in rows if r["method"] == "medusa"}
    g1 = m[("greedy", 1)]
    targets = TARGETS.get(model, TARGETS["*"])
    out = {"greedy_b1_accept_len": {"value": g1["accept_len"],
                                    "target": targets["greedy_b1_accept_len"]},
           "greedy_identical_to_plain": all(r["identical_to_plain"] for r in m.values()
                                            if r["mode"] == "greedy")}
    if g1["device"] == "cpu":  # the "decode speedup"; end to end is reported beside it
        out["cpu_b1_speedup"] = {"value": g1["decode_speedup"], "measure": "decode tokens/s",
                                 "end_to_end": g1["speedup"],
                                 "server_cpu_time": g1["cpu_speedup"],
                                 "target": targets["cpu_b1_speedup"]}
        if ("greedy", 8) in m:
            out["cpu_b8_speedup"] = {"value": m[("greedy", 8)]["speedup"],
                                     "measure": "end-to-end tokens/s", "target": None}
    for v in out.values():
        if isinstance(v, dict) and v["target"] is not None:
            v["met"] = v["value"] >= v["target"]
    return out


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    configs = [(mode, b) for mode in MODES for b in BATCHES
               if ("plain", mode, b) in {(r["method"], r["mode"], r["batch"]) for r in rows}]
    labels = [f"{mode}\nbatch {b}" for mode, b in configs]
    get = {(r["method"], r["mode"], r["batch"]): r for r in rows}
    fig, (ax1, ax3, ax2) = plt.subplots(1, 3, figsize=(15, 4.2))
    x = range(len(configs))
    for off, method, color in ((-0.2, "plain", "#999999"), (0.2, "medusa", "#3b7dd8")):
        vals = [get[(method, m, b)]["tokens_per_s"] for m, b in configs]
        ax1.bar([i + off for i in x], vals, width=0.4, label=method, color=color)
    for i, (m, b) in enumerate(configs):
        ax1.text(i + 0.2, get[("medusa", m, b)]["tokens_per_s"],
                 f"{get[('medusa', m, b)]['speedup']:.2f}x", ha="center", va="bottom")
    ax1.set_xticks(list(x), labels)
    ax1.set_ylabel("tokens / s (end to end)")
    ax1.set_title("decode throughput")
    ax1.legend()
    for off, method, color in ((-0.2, "plain", "#999999"), (0.2, "medusa", "#3b7dd8")):
        vals = [get[(method, m, b)]["server_cpu_ms_per_token"] for m, b in configs]
        ax3.bar([i + off for i in x], vals, width=0.4, label=method, color=color)
    ax3.set_xticks(list(x), labels)
    ax3.set_ylabel("server CPU ms / token (all processes)")
    ax3.set_title("server CPU time per token")
    ax3.legend()
    ax2.bar(list(x), [get[("medusa", m, b)]["accept_len"] for m, b in configs], color="#3b7dd8")
    target = TARGETS.get(rows[0]["model"], TARGETS["*"])["greedy_b1_accept_len"]
    ax2.axhline(target, ls="--", c="k", lw=1, label="target (greedy b1)")
    ax2.set_xticks(list(x), labels)
    ax2.set_ylabel("tokens per verify step")
    ax2.set_title("MEDUSA mean accepted length")
    ax2.legend(loc="lower right")
    fig.suptitle(f"MEDUSA vs plain, {rows[0]['model']}, {rows[0]['device']}")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def model_label(model_path: str, model_dir: Path) -> str:
    if model_dir.resolve() == SHIPPED_MODEL_DIR.resolve():
        return SHIPPED
    return model_path if not Path(model_path).is_dir() else model_dir.name


def merge(out: Path, model: str, rows: list[dict], targets: dict, config: dict) -> dict:
    """This run's rows and targets for ``model``; other models' rows as the file had them
    (rows from before the ``model`` field are the shipped model's)."""
    old = json.loads(out.read_text()) if out.is_file() else {}
    kept = [r if "model" in r else {"model": SHIPPED, **r} for r in old.get("runs", [])]
    kept = [r for r in kept if r["model"] != model]
    old_targets = old.get("targets", {})
    if "greedy_b1_accept_len" in old_targets:  # the single-model layout: the shipped model's
        old_targets = {SHIPPED: old_targets}
    old_config = old.get("config", {})
    if "model_path" in old_config:
        old_config = {SHIPPED: old_config}
    meta = {k: v for k, v in old.get("meta", {}).items() if k != model}
    if not meta and "date" in old and model != SHIPPED:
        meta[SHIPPED] = {k: old[k] for k in ("machine", "versions", "date", "command",
                                              "duration_s") if k in old}
    return {"benchmark": "medusa", "runs": kept + rows,
            "targets": {**old_targets, model: targets}, "config": {**old_config, model: config},
            "meta": meta}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model-path", default=str(SHIPPED_MODEL_DIR), help="folder or model name")
    ap.add_argument("--heads", default=None, help="default: sglang_pr/assets/<model>-medusa")
    ap.add_argument("--prompts", type=int, default=24)
    ap.add_argument("--prompts-file", default=None, help="JSONL chat prompts (real models)")
    ap.add_argument("--modes", default=",".join(MODES), help="comma list of greedy,sample")
    ap.add_argument("--max-new-tokens", type=int, default=SAMPLING.max_new_tokens)
    ap.add_argument("--rounds", type=int, default=1, help="plain-then-MEDUSA server rounds")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--port", type=int, default=30310, help="one server at a time, this port")
    ap.add_argument("--out", default=str(RESULTS / "medusa.json"))
    args = ap.parse_args(argv)
    require_or_exit(NEEDS)
    args.modes = [m for m in args.modes.split(",") if m]
    if not args.modes or any(m not in MODES for m in args.modes) or "greedy" not in args.modes:
        ap.error(f"--modes {','.join(args.modes)}: a comma list of {', '.join(MODES)} "
                 f"with greedy in it")
    args.model_dir = resolve_model_path(args.model_path)
    args.model = model_label(args.model_path, args.model_dir)
    if args.heads is None:
        args.heads = (SHIPPED_HEADS_DIR if args.model == SHIPPED
                      else SHIPPED_HEADS_DIR.parent / f"{args.model}-medusa")
    start = time.time()
    rows = bench(args)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    targets = check_targets(rows, args.model)
    config = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()
              if k not in ("model_dir",)}
    data = merge(out, args.model, rows, targets, config)
    data["meta"][args.model] = {**run_metadata(), "duration_s": round(time.time() - start, 1)}
    data.update(data["meta"][args.model])  # the newest run's metadata at the top, as elsewhere
    out.write_text(json.dumps(data, indent=1) + "\n")
    png = out.with_suffix(".png") if args.model == SHIPPED else \
        out.with_name(f"{out.stem}_{args.model}.png")
    plot(rows, png)
    print(json.dumps(targets, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
