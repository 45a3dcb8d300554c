"""Scale-out benchmark: one server vs ``--dp-size 2`` vs router + 2 workers, same DeepConf groups.

    python benchmarks/scale/bench_scale.py                      # 100 groups, all three setups
    python benchmarks/scale/bench_scale.py --groups 20 --setups single router2

Every setup serves the shipped model with the same flags and runs the same seeded groups
(``--groups`` DeepConf-low groups over ``groups / --repeats`` held-out questions, each asked
``--repeats`` times in a seeded shuffle, so a repeated prompt can reuse its cached prefix),
``--concurrency`` at a time, through the same OpenAI route (``/v1/completions`` with
``extra_body.deepconf``) of the server, or of the router for ``router2``:

* ``single``: one ``sglang-pr serve``;
* ``dp2``: one ``sglang-pr serve --dp-size 2`` (two scheduler ranks, one core each);
* ``router2``: ``sglang_pr.server.cluster``: two workers (one core each) behind smg, cache_aware.

Per setup: groups/s (wall), CPU seconds per group (psutil over every server process tree,
router included), the prefix-cache hit rate per rank/worker (SGLang's own count of prefill
tokens served from the radix cache, ``sglang_pr_kv.prefix_hit_tokens / prefix_prefill_tokens``
in ``/server_info``; servers run with ``--enable-metrics``, without which SGLang keeps no such
count, and ``SGLANG_CACHE_HIT_RATE_WINDOW_SECONDS`` longer than the run, so it is cumulative), and the share of groups whose requests all reached one rank/worker (each
scheduler's group ledger, ``sglang_pr_dp.groups``; it must be 1.0).

Writes ``benchmarks/results/scale.json`` (``{"runs": [{"setup", "groups", "groups_per_s",
"cpu_s_per_group", "prefix_hit_rate", "groups_on_one_rank", ...}], "settings": ...}`` plus
machine, versions, date, command) and ``scale.png``. On a 2-core machine no setup can be
faster than one server: the numbers show the cost of the extra processes, not a speedup.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import random
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests

from sglang_pr.benchmark_meta import run_metadata
from sglang_pr.model.task import heldout_set
from sglang_pr.optional import require_or_exit
from sglang_pr.server.launcher import launch, server_cpu_seconds

NEEDS = (("matplotlib", "bench", "the plot"), ("psutil", "bench", "server CPU times"),
         ("smg", "router", "the router setup"))
RESULTS = Path(__file__).resolve().parents[1] / "results"
SETUPS = ("single", "dp2", "router2")
ENV = {"SGLANG_PR_SEEDED_SAMPLING": "1",
       # SGLang's cache-hit window: longer than any run, so its counts are cumulative
       "SGLANG_CACHE_HIT_RATE_WINDOW_SECONDS": "1000000"}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--groups", type=int, default=100)
    p.add_argument("--repeats", type=int, default=4, help="times each question is asked")
    p.add_argument("--budget", type=int, default=8)
    p.add_argument("--n-init", type=int, default=4)
    p.add_argument("--max-new-tokens", type=int, default=32)
    p.add_argument("--concurrency", type=int, default=4)
    p.add_argument("--max-total-tokens", type=int, default=8192)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--affinity-prompts", type=int, default=10,
                   help="prompts re-sent 3 times each after the run (0: skip)")
    p.add_argument("--setups", nargs="+", choices=SETUPS, default=list(SETUPS))
    p.add_argument("--out", type=Path, default=RESULTS / "scale.json")
    return p.parse_args(argv)


def workload(args) -> list[dict]:
    """The groups: (prompt, seed) for each, the same for every setup."""
    questions = heldout_set(max(1, -(-args.groups // args.repeats)), seed=args.seed)
    prompts = [q.prompt for q in questions for _ in range(args.repeats)][:args.groups]
    random.Random(args.seed).shuffle(prompts)
    return [{"prompt": p, "seed": args.seed * 100_003 + i} for i, p in enumerate(prompts)]


@contextlib.contextmanager
def serving(setup: str, args):
    """(base URL for requests, URLs whose /server_info count, handles whose CPU counts)."""
    from sglang_pr.server.cluster import start_cluster

    # --enable-metrics: SGLang updates its cache-hit counts only with metrics on
    worker_args = ["--max-total-tokens", str(args.max_total_tokens), "--enable-metrics"]
    if setup == "router2":
        with start_cluster(2, worker_args, env=ENV, timeout_s=1800) as c:
            yield c.url, c.worker_urls, [c.router, *c.workers], c.model_id
        return
    extra = worker_args + (["--dp-size", "2"] if setup == "dp2" else []) + ["--sleep-on-idle"]
    with launch(extra_args=extra, env=ENV, timeout_s=1800) as h:
        model = requests.get(h.base_url + "/v1/models", timeout=30).json()["data"][0]["id"]
        yield h.base_url, [h.base_url], [h], model


def scheduler_states(urls: list[str]) -> list[list[dict]]:
    """Per server: its schedulers' internal states (one per DP rank), by rank."""
    out = []
    for url in urls:
        states = requests.get(url + "/server_info", timeout=60).json()["internal_states"]
        out.append(sorted(states, key=lambda s: s["sglang_pr_kv"]["dp_rank"]))
    return out


def ranks(urls: list[str]) -> list[dict]:
    """Every rank of every server, flattened: its KV block and group ledger."""
    return [{"kv": s["sglang_pr_kv"], "groups": s["sglang_pr_dp"]["groups"]}
            for states in scheduler_states(urls) for s in states]


def run_group(url: str, model: str, g: dict, args) -> dict:
    body = {"model": model, "prompt": g["prompt"], "max_tokens": args.max_new_tokens,
            "temperature": 1.0, "seed": g["seed"],
            "deepconf": {"method": "deepconf_low", "budget": args.budget,
                         "n_init": args.n_init, "window": 8, "k": 5}}
    r = requests.post(url + "/v1/completions", json=body, timeout=600)
    r.raise_for_status()
    return r.json()["metadata"]["deepconf"]["totals"]


def measure(setup: str, args, groups: list[dict]) -> dict:
    with serving(setup, args) as (url, urls, handles, model):
        run_group(url, model, {"prompt": "Q: 1+1\nA:", "seed": 1}, args)  # warm-up
        procs = [p for h in handles for p in h.processes()]
        before, cpu0 = ranks(urls), server_cpu_seconds(procs)[0]
        t0 = time.perf_counter()
        with ThreadPoolExecutor(args.concurrency) as ex:
            totals = list(ex.map(lambda g: run_group(url, model, g, args), groups))
        wall = time.perf_counter() - t0
        cpu = server_cpu_seconds(procs)[0] - cpu0
        after = ranks(urls)
        sticky = affinity(url, urls, model, groups, args)
    return {**summarize(setup, groups, totals, wall, cpu, before, after), **sticky}


def affinity(url: str, urls: list[str], model: str, groups: list[dict], args) -> dict:
    """After the timed run: ``--affinity-prompts`` of its prompts, each sent again 3 times one
    group at a time; the share whose repeats all landed on one rank/worker (cache-aware
    routing in router2, the hash tie-break of the least-loaded rank in dp2)."""
    prompts = list(dict.fromkeys(g["prompt"] for g in groups))[:args.affinity_prompts]
    same = 0
    for i, prompt in enumerate(prompts):
        landed = set()
        for r in range(3):
            before = ranks(urls)
            run_group(url, model, {"prompt": prompt, "seed": 7 + i * 3 + r}, args)
            after = ranks(urls)
            landed |= {j for j, (b, a) in enumerate(zip(before, after))
                       if set(a["groups"]) - set(b["groups"])}
        same += len(landed) == 1
    return {"same_prompt_same_rank": round(same / max(1, len(prompts)), 4),
            "affinity_prompts": len(prompts)}


def summarize(setup, groups, totals, wall, cpu, before, after) -> dict:
    hit = []
    for b, a in zip(before, after):
        prefill = a["kv"]["prefix_prefill_tokens"] - b["kv"]["prefix_prefill_tokens"]
        got = a["kv"]["prefix_hit_tokens"] - b["kv"]["prefix_hit_tokens"]
        hit.append(round(got / prefill, 4) if prefill > 0 else None)
    where: dict[str, set[int]] = {}
    per_rank = []
    for i, (b, a) in enumerate(zip(before, after)):
        new = {g: n - b["groups"].get(g, 0) for g, n in a["groups"].items()
               if n > b["groups"].get(g, 0)}
        per_rank.append(len(new))
        for g in new:
            where.setdefault(g, set()).add(i)
    n = len(groups)
    return {"setup": setup, "groups": n, "wall_s": round(wall, 2),
            "groups_per_s": round(n / wall, 4), "cpu_s": round(cpu, 2),
            "cpu_s_per_group": round(cpu / n, 4), "prefix_hit_rate": hit,
            "groups_on_one_rank": round(sum(len(r) == 1 for r in where.values())
                                        / max(1, len(where)), 4),
            "groups_seen": len(where), "groups_per_rank": per_rank,
            "generated_tokens": sum(int(t["generated_tokens"]) for t in totals),
            "traces_started": sum(int(t["traces_started"]) for t in totals)}


def plot(runs: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [r["setup"] for r in runs]
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.6))
    axes[0].bar(names, [r["groups_per_s"] for r in runs], color="tab:blue")
    axes[0].set_title("groups / s (wall)")
    axes[1].bar(names, [r["cpu_s_per_group"] for r in runs], color="tab:orange")
    axes[1].set_title("server CPU s / group")
    width, labelled = 0.35, set()
    for i, r in enumerate(runs):
        rates = [x or 0.0 for x in r["prefix_hit_rate"]]
        for j, v in enumerate(rates):
            axes[2].bar(i + (j - (len(rates) - 1) / 2) * width, v, width,
                        color=("tab:green", "tab:olive")[j % 2],
                        label=None if j in labelled else f"rank/worker {j}")
            labelled.add(j)
    axes[2].set_xticks(range(len(runs)), names)
    axes[2].set_ylim(0, 1)
    axes[2].set_title("prefix-cache hit rate")
    axes[2].legend(fontsize=8)
    for ax, r in zip(axes, runs[:1]):
        ax.annotate(f"{r['groups']} groups; groups on one rank: "
                    + ", ".join(f"{x['setup']} {x['groups_on_one_rank']:.2f}" for x in runs),
                    (0, -0.2), xycoords="axes fraction", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv=None) -> int:
    args = parse_args(argv)
    require_or_exit(NEEDS)
    meta = run_metadata()
    groups = workload(args)
    runs = []
    for setup in args.setups:
        print(f"bench_scale: {setup} ...", file=sys.stderr, flush=True)
        runs.append(measure(setup, args, groups))
        print(json.dumps(runs[-1]), file=sys.stderr, flush=True)
    settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    out = {"runs": runs, "settings": settings,
           "note": "2 CPU cores shared with other jobs: every setup competes for the same "
                   "cores, so no speedup is possible here; the router and DP add processes.",
           **meta}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=1) + "\n")
    plot(runs, args.out.with_suffix(".png"))
    print(f"bench_scale: wrote {args.out} and {args.out.with_suffix('.png')}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
