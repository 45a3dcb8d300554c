"""Cascade benchmark: (a) decode attention alone and (b) end to end, side by side in one run.

    python benchmarks/cascade/bench_cascade.py                  # CPU: both parts
    python benchmarks/cascade/bench_cascade.py --device cuda    # GPU: Triton kernels, FlashInfer
                                                                # server as the flat baseline
    python benchmarks/cascade/bench_cascade.py --part kernel    # one part; the other section of
                                                                # an existing JSON is kept

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
from e2e_bench import run_e2e_bench  # noqa: E402
from kernel_bench import run_kernel_bench  # noqa: E402

from sglang_pr.benchmark_meta import run_metadata  # noqa: E402

RESULTS = Path(__file__).resolve().parents[1] / "results"


def targets(kernel: list[dict], e2e: list[dict], device: str) -> dict:
    need = 0.5 if device == "cpu" else 0.8
    key = [r for r in kernel if r["P"] == 8192 and r["n"] == 16]
    out = {"kernel_fraction_of_bound_needed": need}
    if key:
        out["kernel_P8192_n16"] = {
            f"S={r['S']}": {"fraction_of_bound": r["fraction_of_bound"],
                            **({"compute_bound_speedup": r["compute_bound_speedup"]}
                               if "compute_bound_speedup" in r else {}),
                            **({"fraction_of_bound_vs_torch_native":
                                r["speedup_vs_torch_native"] / r["bound"]}
                               if "speedup_vs_torch_native" in r else {})}
            for r in key
        }
    if e2e:
        out["e2e_speedup_needed"] = 1.5 if device == "cpu" else None
        out["e2e_speedup"] = [r["speedup"] for r in e2e]
        out["e2e_speedup_whole_request"] = [r.get("speedup_request") for r in e2e]
        out["e2e_speedup_whole_request_cpu_time"] = [r.get("speedup_request_cpu_time")
                                                     for r in e2e]
    return out


def plot(data: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    kernel, e2e = data.get("kernel", []), data.get("e2e", [])
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.8), gridspec_kw={"width_ratios": [3, 1]})
    ax = axes[0]
    labels = [f"P{r['P']}\nn{r['n']} S{r['S']}" for r in kernel]
    xs = range(len(kernel))
    ax.bar([x - 0.3 for x in xs], [r["bound"] for r in kernel], 0.3, label="bound n(P+S)/(P+nS)",
           color="#cccccc")
    ax.bar(xs, [r["speedup"] for r in kernel], 0.3, label="cascade vs flat (same kernels)",
           color="#1f77b4")
    if kernel and "speedup_vs_torch_native" in kernel[0]:
        ax.bar([x + 0.3 for x in xs], [r["speedup_vs_torch_native"] for r in kernel], 0.3,
               label="cascade vs SGLang torch_native", color="#ff7f0e")
    ax.set_yscale("log")
    ax.set_xticks(list(xs), labels, fontsize=6)
    ax.set_ylabel("speedup of one decode attention step (log)")
    dev = kernel[0]["device"] if kernel else "?"
    ax.set_title(f"(a) decode attention, {dev}, one layer")
    ax.legend(fontsize=8)
    ax = axes[1]
    if e2e:
        r = e2e[0]
        ax.bar([0, 1], [r["flat_tok_s"], r["cascade_tok_s"]], color=["#999999", "#1f77b4"])
        ax.set_xticks([0, 1], [r["flat_backend"], "cascade"])
        ax.set_title(f"(b) e2e {r['n']}-way fork, P={r['P']}: x{r['speedup']:.2f}")
        ax.set_ylabel("decode tokens/s (16 branches)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--part", choices=["all", "kernel", "e2e", "none"], default="all",
                   help="none: only recompute targets and redraw the PNG from the JSON")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--threads", type=int, default=1, help="torch threads for part (a)")
    p.add_argument("--e2e-reps", type=int, default=3)
    p.add_argument("--e2e-new-tokens", type=int, default=64)
    p.add_argument("--out", default=str(RESULTS / "cascade.json"))
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    data = json.loads(out.read_text()) if out.exists() and args.part != "all" else {}
    data.setdefault("kernel", [])
    data.setdefault("e2e", [])
    if args.part == "none":
        data["targets"] = targets(data["kernel"], data["e2e"], args.device)
        out.write_text(json.dumps(data, indent=1) + "\n")
        plot(data, out.with_suffix(".png"))
        return 0
    meta = run_metadata()
    if args.part in ("all", "kernel"):
        data["kernel"] = run_kernel_bench(device=args.device, reps=args.reps)
        data["kernel_meta"] = {**meta, "heads": {"q": 32, "kv": 8, "dim": 128},
                               "dtype": "float32", "torch_threads": args.threads}
    if args.part in ("all", "e2e"):
        data["e2e"] = run_e2e_bench(reps=args.e2e_reps, gpu=args.device == "cuda",
                                    new_tokens=args.e2e_new_tokens)
        data["e2e_meta"] = meta
    data.update(meta)
    data["targets"] = targets(data["kernel"], data["e2e"], args.device)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(data, indent=1) + "\n")
    plot(data, out.with_suffix(".png"))
    print(json.dumps(data["targets"], indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
