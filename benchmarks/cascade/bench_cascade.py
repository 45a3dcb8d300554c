"""Cascade benchmark: (a) decode attention alone and (b) end to end, side by side in one run.

    python benchmarks/cascade/bench_cascade.py                  # CPU: both parts
    python benchmarks/cascade/bench_cascade.py --device cuda    # GPU: Triton kernels, FlashInfer
                                                                # server as the flat baseline
    python benchmarks/cascade/bench_cascade.py --part kernel    # one part; the other section of
                                                                # an existing JSON is kept
    python benchmarks/cascade/bench_cascade.py --merge F.json   # add the rows of a run made on
                                                                # another device (gpu_check.sh)

Rows carry their device; a run replaces only its own device's rows, so CPU and GPU numbers
live side by side in one file, each with its own metadata (``kernel_meta`` / ``e2e_meta``
keyed by device) and targets.

Writes ``benchmarks/results/cascade.json`` (schema of issue 6 plus extra fields per row) and
``benchmarks/results/cascade.png``. Targets: CPU - at P=8192, n=16 the attention speedup reaches
>= 50 % of the bound n(P+S)/(P+nS), end to end >= 1.5x tokens/s; GPU - >= 80 % of the bound.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from kernel_bench import run_kernel_bench  # noqa: E402

from sglang_pr.benchmark_meta import run_metadata  # noqa: E402
from sglang_pr.optional import require_or_exit  # noqa: E402

RESULTS = Path(__file__).resolve().parents[1] / "results"


# What the issue asks per device: the share of the byte bound at P=8192, n=16 (kernel) and
# the end-to-end tokens/s ratio (no end-to-end target on a GPU).
NEEDED = {"cpu": {"kernel": 0.5, "e2e": 1.5}, "cuda": {"kernel": 0.8, "e2e": None}}
# Part (b) runs the shipped model's architecture (random weights, wider); fork_bench.py adds
# rows of real models, each with its own targets (issue 12: decode and whole-request ratios).
SHIPPED = "tiny-reasoner"
NEEDED_REAL = {"cpu": {"decode": 2.5, "request": 3.0}}


def _model(row: dict) -> str:
    return row.get("model", SHIPPED) if isinstance(row.get("model"), str) else SHIPPED


def targets(kernel: list[dict], e2e: list[dict]) -> dict:
    """Per device with rows: the P=8192, n=16 kernel rows and the end-to-end speedups."""
    out = {}
    for dev in sorted({r["device"] for r in kernel + e2e}):
        need = NEEDED.get(dev, NEEDED["cuda"])
        t: dict = {"kernel_fraction_of_bound_needed": need["kernel"]}
        key = [r for r in kernel if r["device"] == dev and r["P"] == 8192 and r["n"] == 16]
        if key:
            t["kernel_P8192_n16"] = {f"S={r['S']}": _key_row(r) for r in key}
        rows = [r for r in e2e if r["device"] == dev and _model(r) == SHIPPED]
        real = [r for r in e2e if r["device"] == dev and _model(r) != SHIPPED]
        if real:
            t["e2e_real_models"] = {_model(r): {
                "needed": NEEDED_REAL.get(dev), "decode_speedup": r["speedup"],
                "whole_request_speedup": r["speedup_request"],
                "identical_greedy": r.get("identical_greedy")} for r in real}
        if rows:
            t["e2e_speedup_needed"] = need["e2e"]
            t["e2e_speedup"] = [r["speedup"] for r in rows]
            t["e2e_speedup_whole_request"] = [r.get("speedup_request") for r in rows]
            t["e2e_speedup_whole_request_cpu_time"] = [r.get("speedup_request_cpu_time")
                                                       for r in rows]
        out[dev] = t
    return out


def _key_row(r: dict) -> dict:
    out = {"fraction_of_bound": r["fraction_of_bound"]}
    # graph fields: CUDA rows only (kernel_bench); compute_bound_speedup: runs that measured it
    out.update({k: r[k] for k in ("fraction_of_bound_graph", "graph_error",
                                  "compute_bound_speedup") if k in r})
    if "speedup_vs_torch_native" in r:
        out["fraction_of_bound_vs_torch_native"] = r["speedup_vs_torch_native"] / r["bound"]
    return out


def _meta_key(row: dict) -> str:
    """Metadata key of a row: its device (shipped model) or ``device:model`` (real models)."""
    return row["device"] if _model(row) == SHIPPED else f"{row['device']}:{_model(row)}"


def merge_rows(data: dict, part: str, rows: list[dict], meta: dict) -> None:
    """Replace ``data[part]``'s rows of the (device, model) pairs in ``rows``; metadata per
    pair (see :func:`_meta_key`)."""
    keys = {_meta_key(r) for r in rows}
    data[part] = [r for r in data.get(part, []) if _meta_key(r) not in keys] + rows
    data[f"{part}_meta"] = {**data.get(f"{part}_meta", {}), **{k: meta for k in keys}}


def plot(data: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    kernel, e2e = data.get("kernel", []), data.get("e2e", [])
    real = [r for r in e2e if _model(r) != SHIPPED]
    e2e = [r for r in e2e if _model(r) == SHIPPED]
    devs = sorted({r["device"] for r in kernel}) or ["cpu"]
    fig, axes = plt.subplots(1, len(devs) + 1 + len(real),
                             figsize=(7 * len(devs) + 4 + 6 * len(real), 4.8),
                             gridspec_kw={"width_ratios": [3] * len(devs) + [1]
                                          + [1.6] * len(real)})
    for ax, dev in zip(axes, devs):
        _plot_kernel(ax, [r for r in kernel if r["device"] == dev], dev)
    for ax, r in zip(axes[len(devs) + 1 :], real):
        _plot_real(ax, r)
    ax = axes[len(devs)]
    if e2e:
        r = e2e[0]
        ax.bar([0, 1], [r["flat_tok_s"], r["cascade_tok_s"]], color=["#999999", "#1f77b4"])
        ax.set_xticks([0, 1], [r["flat_backend"], "cascade"])
        ax.set_title(f"(b) e2e {r['n']}-way fork, P={r['P']}\n{r['device']}: x{r['speedup']:.2f}",
                     fontsize=9)
        ax.set_ylabel(f"decode tokens/s ({r['n']} branches)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def _plot_real(ax, r: dict) -> None:
    """A real model's fork (fork_bench.py): decode and whole-request tokens/s per config."""
    names = list(r["medians"])
    xs = range(len(names))
    ax.bar([x - 0.2 for x in xs], [r["medians"][c]["decode_tok_s"] for c in names], 0.4,
           label="decode tokens/s", color="#1f77b4")
    ax.bar([x + 0.2 for x in xs], [r["medians"][c]["request_tok_s"] for c in names], 0.4,
           label="whole-request tokens/s", color="#ff7f0e")
    ax.set_xticks(list(xs), [c.replace("_", "\n") for c in names], fontsize=7)
    ax.set_title(f"(c) {r['model']}, {r['n']}-way greedy fork, P={r['P']}\n"
                 f"cascade: decode x{r['speedup']:.2f}, request x{r['speedup_request']:.2f}",
                 fontsize=9)
    ax.legend(fontsize=7)


def _plot_kernel(ax, rows: list[dict], dev: str) -> None:
    labels = [f"P{r['P']}\nn{r['n']} S{r['S']}" for r in rows]
    xs = range(len(rows))
    ax.bar([x - 0.3 for x in xs], [r["bound"] for r in rows], 0.3, label="bound n(P+S)/(P+nS)",
           color="#cccccc")
    ax.bar(xs, [r["speedup"] for r in rows], 0.3, label="cascade vs flat (same kernels)",
           color="#1f77b4")
    if rows and "speedup_vs_torch_native" in rows[0]:
        ax.bar([x + 0.3 for x in xs], [r["speedup_vs_torch_native"] for r in rows], 0.3,
               label="cascade vs SGLang torch_native", color="#ff7f0e")
    ax.set_yscale("log")
    ax.set_xticks(list(xs), labels, fontsize=6)
    ax.set_ylabel("speedup of one decode attention step (log)")
    ax.set_title(f"(a) decode attention, {dev}, one layer")
    ax.legend(fontsize=8)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--part", choices=["all", "kernel", "e2e", "none"], default="all",
                   help="none: only recompute targets and redraw the PNG from the JSON")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--threads", type=int, default=1, help="torch threads for part (a)")
    p.add_argument("--quick", action="store_true",
                   help="part (a) on one small configuration only (a smoke test of the setup)")
    p.add_argument("--grid", nargs="+", metavar="P,n,S",
                   help="part (a) on these configurations only (e.g. 8192,16,32); with --out")
    p.add_argument("--no-torch-native", action="store_true",
                   help="part (a) on CPU without SGLang's torch_native column (needs sglang)")
    p.add_argument("--e2e-reps", type=int, default=3)
    p.add_argument("--e2e-new-tokens", type=int, default=64)
    p.add_argument("--merge", metavar="JSON", help="add the rows of a result file written on "
                   "another machine (e.g. by gpu_check.sh), replacing that device's rows")
    p.add_argument("--out", default=str(RESULTS / "cascade.json"))
    args = p.parse_args(argv)
    if args.merge and args.part != "all":
        p.error("--merge adds another file's rows: it runs no part (drop --part)")
    if (args.quick or args.grid) and Path(args.out) == RESULTS / "cascade.json":
        p.error("--quick/--grid run part of the grid: write it elsewhere with --out")
    needs = [("matplotlib", "bench", "the plot")]
    if args.part in ("all", "e2e") and not args.merge:
        needs.append(("psutil", "bench", "server CPU times"))
    require_or_exit(needs)  # before any work: part (a) alone runs for many minutes
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    data = _load(out) if out.exists() else {}
    if args.merge:
        other = _load(Path(args.merge))
        for part in ("kernel", "e2e"):
            for dev, meta in other.get(f"{part}_meta", {}).items():
                if meta.get("quick"):
                    p.error(f"{args.merge}: its {dev} {part} rows are a --quick smoke test")
                merge_rows(data, part, [r for r in other[part] if r["device"] == dev], meta)
    elif args.part != "none":
        _run(data, args)
    data.setdefault("kernel", [])
    data.setdefault("e2e", [])
    data["targets"] = targets(data["kernel"], data["e2e"])
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(data, indent=1) + "\n")
    plot(data, out.with_suffix(".png"))
    print(json.dumps(data["targets"], indent=1))
    return 0


def _grid(args) -> list[tuple[int, int, int]] | None:
    if args.quick:
        return [(512, 4, 32)]
    if args.grid:
        return [tuple(int(x) for x in g.split(",")) for g in args.grid]
    return None  # the whole grid


def _load(path: Path) -> dict:
    """A result file, with metadata per device (older files kept one set, from a CPU run)."""
    data = json.loads(path.read_text())
    for part in ("kernel", "e2e"):
        meta = data.get(f"{part}_meta", {})
        if "machine" in meta:
            devs = {r["device"] for r in data.get(part, [])} or {"cpu"}
            data[f"{part}_meta"] = {d: meta for d in devs}
    return data


def _run(data: dict, args) -> None:
    meta = run_metadata()
    if args.part in ("all", "kernel"):
        rows = run_kernel_bench(device=args.device, reps=args.reps,
                                grid=_grid(args),
                                with_torch_native=False if args.no_torch_native else None)
        merge_rows(data, "kernel", rows, {**meta, "heads": {"q": 32, "kv": 8, "dim": 128},
                                          "dtype": "float32", "torch_threads": args.threads,
                                          "quick": args.quick})
    if args.part in ("all", "e2e"):
        from e2e_bench import run_e2e_bench  # needs sglang (its server): imported only here

        rows = run_e2e_bench(reps=args.e2e_reps, gpu=args.device == "cuda",
                             new_tokens=args.e2e_new_tokens)
        merge_rows(data, "e2e", rows, meta)
    data.update(meta)  # the latest run's, at the top level (as before)


if __name__ == "__main__":
    raise SystemExit(main())
