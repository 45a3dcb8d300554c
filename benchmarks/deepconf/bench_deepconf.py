"""DeepConf benchmark: self-consistency vs DeepConf-low/-high online, side by side in one run.

    python benchmarks/deepconf/bench_deepconf.py                       # start a server, both parts
    python benchmarks/deepconf/bench_deepconf.py --url http://127.0.0.1:30000 --part groups
    python benchmarks/deepconf/bench_deepconf.py --questions 100 --budgets 32 64

Part ``groups``: held-out questions of the shipped model through one server, every method and
budget per question before the next question (load on the machine hits all alike). Reports
accuracy, generated tokens, wall time (client-side, summed over questions) and traces per
question. Part ``overhead``: confidence tracking vs decode step time at batch 32
(:mod:`overhead_bench`).

Writes ``benchmarks/results/deepconf.json`` (``{"runs": [{"model", "method", "budget", "accuracy",
"generated_tokens", "wall_s", "n_questions", ...}], "targets": ..., "overhead": ...}`` plus
machine, versions, date, command) and ``benchmarks/results/deepconf.png`` (accuracy vs tokens).
Targets at the largest budget: DeepConf-low <= 50 % of SC's tokens, <= 60 % of its wall time,
accuracy >= SC - 0.01; tracking overhead <= 3 % of the decode step at batch 32.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from overhead_bench import run_overhead  # noqa: E402

from sglang_pr.benchmark_meta import run_metadata  # noqa: E402
from sglang_pr.cli.side_by_side import (  # noqa: E402
    MethodStats,
    demo_questions,
    paired_diff_ci,
    run_group,
)
from sglang_pr.deepconf.config import SAMPLING, SHIPPED_MODEL_WINDOW  # noqa: E402
from sglang_pr.deepconf.extract import EXTRACTORS  # noqa: E402
from sglang_pr.optional import require_or_exit  # noqa: E402
from sglang_pr.server.launcher import launch  # noqa: E402

RESULTS = Path(__file__).resolve().parents[1] / "results"
METHODS = ("sc", "deepconf_low", "deepconf_high")
# Optional modules this benchmark needs, checked before any work (module, extra, what for).
NEEDS = (("matplotlib", "bench", "the plot"), ("psutil", "bench", "server CPU times"))


def server_description(url: str, started_here: bool) -> dict:
    """Which server the numbers come from (a --url server was started by hand)."""
    import requests

    info = requests.get(url + "/server_info", timeout=30).json()
    keys = ("model_path", "attention_backend", "device", "max_running_requests",
            "disable_overlap_schedule", "disable_radix_cache")
    return {"started_by_benchmark": started_here, **{k: info.get(k) for k in keys}}


def run_groups(url: str, args) -> tuple[list[dict], list[dict]]:
    problems = args.question_list
    sampling = SAMPLING.as_params(max_new_tokens=args.max_new_tokens,
                                  temperature=args.temperature, top_p=args.top_p)
    keys = [(m, n) for n in args.budgets for m in args.methods]
    agg = {k: MethodStats(*k) for k in keys}
    per_question = []
    for qi, p in enumerate(problems):
        row = {"prompt": p.prompt, "answer": p.truth, "results": {}}
        for m, n in keys:
            cfg = {"method": m, "budget": n, "window": args.window, "width": args.width or n,
                   **({} if args.n_init is None else {"n_init": min(args.n_init, n)}),
                   "extractor": args.extractor,
                   **(args.deepconf_extra if m != "sc" else {})}
            d, elapsed = run_group(url, p.prompt, cfg, sampling)
            agg[(m, n)].add(d, elapsed, p.truth)
            row["results"][f"{m}@{n}"] = {"answer": d["answer"],
                                          "tokens": d["totals"]["generated_tokens"],
                                          "traces": d["totals"]["traces_started"],
                                          "wall_s": elapsed, "threshold": d["threshold"]}
        per_question.append(row)
        print(f"[{qi + 1}/{len(problems)}] " + "  ".join(
            f"{m}@{n}: {a.correct}/{a.n_questions} {a.generated_tokens}t"
            for (m, n), a in agg.items()), flush=True)
    return [{"model": args.model_name, **a.row()} for a in agg.values()], per_question


def accuracy_diff_ci(per_question: list[dict], budget: int) -> list[float]:
    """95 % paired-bootstrap interval (over questions) of DeepConf-low minus SC accuracy."""
    def hits(method: str) -> list[bool]:
        return [q["results"][f"{method}@{budget}"]["answer"] == str(q["answer"])
                for q in per_question]

    return list(paired_diff_ci(hits("deepconf_low"), hits("sc")))


def targets(runs: list[dict], per_question: list[dict] | None = None) -> dict:
    top = max(r["budget"] for r in runs)
    by = {r["method"]: r for r in runs if r["budget"] == top}
    sc, low = by.get("sc"), by.get("deepconf_low")
    if not (sc and low):
        return {}
    out = {"budget": top,
           "low_tokens_vs_sc": low["generated_tokens"] / sc["generated_tokens"],
           "low_wall_vs_sc": low["wall_s"] / sc["wall_s"],
           "low_accuracy_minus_sc": low["accuracy"] - sc["accuracy"]}
    if per_question:
        out["low_accuracy_minus_sc_ci95"] = accuracy_diff_ci(per_question, top)
    out.update(tokens_met=out["low_tokens_vs_sc"] <= 0.50, wall_met=out["low_wall_vs_sc"] <= 0.60,
               accuracy_met=out["low_accuracy_minus_sc"] >= -0.01)
    return out


def plot(runs: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    style = {"sc": ("o", "tab:gray"), "deepconf_low": ("s", "tab:blue"),
             "deepconf_high": ("^", "tab:orange")}
    for m in METHODS:
        pts = sorted((r["generated_tokens"], r["accuracy"], r["budget"]) for r in runs
                     if r["method"] == m)
        if not pts:
            continue
        marker, color = style[m]
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker=marker, color=color, label=m)
        for x, y, n in pts:
            ax.annotate(f"N={n}", (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8)
    ax.set_xlabel("generated tokens (all questions, all branches)")
    ax.set_ylabel("accuracy (voted answer)")
    ax.set_title("Self-consistency vs DeepConf (online, in-server)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def resolve_inputs(args) -> None:
    """--model-path (a name is materialised), --extractor default, the questions."""
    from sglang_pr.models import ModelError, resolve_model_path

    args.resolved_model_path = None
    if args.model_path is not None:
        try:
            args.resolved_model_path = str(resolve_model_path(args.model_path))
        except ModelError as e:
            raise SystemExit(_usage(f"--model-path: {e}")) from None
    args.model_name = args.model_name or (
        "tiny-reasoner" if args.model_path is None else Path(args.model_path).name.lower())
    args.extractor = args.extractor or ("last_number" if args.dataset else "task")
    try:
        args.question_list = demo_questions(args.questions, args.dataset,
                                            args.resolved_model_path)
    except ValueError as e:
        raise SystemExit(_usage(str(e))) from None


def _usage(message: str) -> int:
    print(f"bench_deepconf: {message}", file=sys.stderr)
    return 2


def run_parts(data: dict, url: str, server, args, meta: dict) -> None:
    """The parts asked for, into ``data`` (``server``: the handle when this run started it)."""
    if args.part in ("all", "groups"):
        start = time.perf_counter()
        runs, per_q = run_groups(url, args)
        data.update(runs=runs, targets=targets(runs, per_q), per_question=per_q,
                    settings={k: getattr(args, k) for k in (
                        "questions", "budgets", "methods", "window", "n_init", "width",
                        "max_new_tokens", "temperature", "top_p", "deepconf_extra",
                        "model_name", "model_path", "dataset", "extractor")},
                    groups_elapsed_s=time.perf_counter() - start)
    if args.part in ("all", "overhead"):
        procs = server.processes() if server is not None else None
        data["overhead"] = {**run_overhead(url, steps=args.overhead_steps,
                                            rounds=args.overhead_rounds,
                                            server_processes=procs),
                            "date": meta["date"], "command": meta["command"]}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", help="use a running server (else one is started)")
    ap.add_argument("--model-path", default=None,
                    help="model to serve: a folder or a known name such as smollm2-135m "
                    "(default: the shipped model)")
    ap.add_argument("--model-name", default=None, help="the rows' model name (default: "
                    "tiny-reasoner, the --model-path name, or its folder's name)")
    ap.add_argument("--dataset", default=None, metavar="FILE.jsonl",
                    help='questions from a JSONL file of {"question", "answer"} lines, through '
                    "the model's chat template (default: the shipped task's held-out questions)")
    ap.add_argument("--extractor", default=None, choices=sorted(EXTRACTORS),
                    help="answer extractor (default: task, or last_number with --dataset)")
    ap.add_argument("--part", choices=("all", "groups", "overhead"), default="all")
    ap.add_argument("--questions", type=int, default=100)
    ap.add_argument("--budgets", type=int, nargs="+", default=[32, 64])
    ap.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    ap.add_argument("--window", type=int, default=SHIPPED_MODEL_WINDOW,
                    help="group window (default: about one step line of the shipped task)")
    ap.add_argument("--n-init", type=int, default=None,
                    help="warm-up traces, cut to the budget (default: the config's budget rule; "
                    "the recorded runs used 16)")
    ap.add_argument("--width", type=int, default=0, help="concurrent branches (0: = budget)")
    # Below SAMPLING's 160 on purpose (the recorded runs use 128): a wrong trace that rambles
    # on costs less, and no correct trace of the shipped task is longer than 100 tokens.
    ap.add_argument("--max-new-tokens", type=int, default=128,
                    help="just above the longest correct trace of the shipped task (100 tokens)")
    ap.add_argument("--temperature", type=float, default=SAMPLING.temperature)
    ap.add_argument("--top-p", type=float, default=SAMPLING.top_p)
    ap.add_argument("--overhead-steps", type=int, default=256)
    ap.add_argument("--overhead-rounds", type=int, default=15,
                    help="plain/tracked rounds in ABBA order (the end-to-end figure is a median)")
    ap.add_argument("--deepconf-extra", type=json.loads, default={},
                    help='extra DeepConfConfig fields for the DeepConf methods, as JSON')
    ap.add_argument("--out", default=str(RESULTS / "deepconf.json"))
    args = ap.parse_args(argv)
    require_or_exit(NEEDS)
    resolve_inputs(args)  # bad input: one line naming the flag, before any server starts
    out_path = Path(args.out)
    data = json.loads(out_path.read_text()) if out_path.exists() else {}
    meta = run_metadata()
    if args.part in ("all", "groups"):  # an overhead-only run keeps the groups' metadata
        data.update(meta)
    with contextlib.ExitStack() as stack:  # the server stops however this block is left
        server, url = None, args.url
        if url is None:
            # One OpenMP thread: on a shared CPU, spinning OpenMP workers of several processes
            # slow a decode step by 10x or more (measured here: 87 ms vs ~1 s at batch 64).
            server = stack.enter_context(launch(
                model_path=args.resolved_model_path, timeout_s=600,
                env={"OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}))
            url = server.base_url
        data["server"] = server_description(url, started_here=server is not None)
        run_parts(data, url, server, args, meta)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps(data, indent=1))
    if data.get("runs"):
        plot(data["runs"], out_path.with_suffix(".png"))
    print(json.dumps({k: data.get(k) for k in ("targets", "overhead")}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
