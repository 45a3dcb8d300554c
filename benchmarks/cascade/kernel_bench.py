"""(a) Decode attention alone, flat vs cascade, one layer of one decode step.

Per configuration (prefix P, branches n, suffix S), one fork group of n requests:

* ``cascade_s``  - our cascade: the prefix once for all n queries + each suffix + LSE merge;
* ``flat_s``     - the same kernels run flat: each request over its whole P + S KV (so the ratio
  isolates what sharing the prefix saves, not a difference between implementations);
* ``torch_native_s`` (CPU only) - SGLang's own torch_native decode attention on the same KV,
  i.e. what SGLang runs on a CPU today.

Times on CPU are the CPU time of the one compute thread (torch uses 1 thread): on a machine
shared with other jobs that is what a step costs a core; wall-clock times are recorded beside.

KV bytes are what each algorithm reads from the KV pool (from the work lists: tokens x KV heads
x head dim x 2 (K and V) x bytes per element), not a hardware counter. The bound is
n(P+S) / (P+nS), the KV-read ratio.

The bound assumes both sides are memory-bound. Cascade does the same FLOPs as flat (every query
still meets every key: 4 * n * Hq * D * (P+S)), only with fewer bytes, so it cannot beat the
time those FLOPs take at the device's matmul rate. Each row records that floor:
``compute_floor_s`` = FLOPs / the float32 matmul rate measured at the start of the run
(``matmul_gflops``, one 1024^3 matmul on the same threads), and ``compute_bound_speedup`` =
flat_s / compute_floor_s, the most any exact float32 cascade could reach here.
"""

from __future__ import annotations

import statistics
import time

import torch

from sglang_pr.kernels import CascadeDecode
from sglang_pr.kernels.testing import ForkScenario, make_scenario

GRID_P = (512, 2048, 8192)
GRID_N = (4, 16, 64)
GRID_S = (32, 256)


def _timer(device: str):
    """``fn -> (wall seconds, compute seconds)``.

    CPU: compute = CPU time of this thread (``time.thread_time``; torch runs on 1 thread here),
    i.e. what the step costs a core, unaffected by waiting for a core on a shared machine.
    CUDA: both are CUDA-event time.
    """
    if device == "cuda":
        def run(fn) -> tuple[float, float]:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            torch.cuda.synchronize()
            return (start.elapsed_time(end) / 1e3,) * 2
    else:
        def run(fn) -> tuple[float, float]:
            w0, c0 = time.perf_counter(), time.thread_time()
            fn()
            return time.perf_counter() - w0, time.thread_time() - c0
    return run


def _torch_native_fn(sc: ForkScenario):
    """SGLang's torch_native decode over the scenario's requests (CPU baseline)."""
    from sglang.srt.layers.attention.torch_native_backend import TorchNativeAttnBackend

    B = len(sc.req_slots)
    width = max(s.numel() for s in sc.req_slots)
    req_to_token = torch.zeros((B, width), dtype=torch.int32)
    for b, s in enumerate(sc.req_slots):
        req_to_token[b, : s.numel()] = s.to(torch.int32)
    seq_lens = torch.tensor([s.numel() for s in sc.req_slots])
    out = torch.empty_like(sc.q)
    # The method only reads its arguments (no backend state), so no model runner is needed.
    run = TorchNativeAttnBackend._run_sdpa_forward_decode

    def fn():
        run(None, sc.q, out, sc.k_cache, sc.v_cache, req_to_token, torch.arange(B), seq_lens,
            None, scaling=sc.scale, enable_gqa=sc.q.shape[1] != sc.k_cache.shape[1])
        return out

    return fn


def cuda_graph_seconds(fn, iters: int = 20) -> float:
    """GPU time of one ``fn()`` replayed from a CUDA graph of ``iters`` calls (no host launch
    overhead: the kernels' own time, as kernel benchmarks report it). ``fn`` must have run once
    (Triton compiles on first launch, which a capture cannot do)."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        fn()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for _ in range(iters):
            fn()
    graph.replay()  # warm
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    graph.replay()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) / 1e3 / iters


def _graph_rows(fns: dict, bound: float) -> dict:
    """CUDA: flat and cascade timed from CUDA graphs beside the eager times (the cascade
    backend itself runs eagerly - its plan is host-side - so eager is what serving sees, and
    the graph time is the kernels' own). Any failure is recorded, not raised: a device call is
    scarce and the eager numbers stand on their own."""
    try:
        t = {k: cuda_graph_seconds(fns[k]) for k in ("cascade_s", "flat_s")}
    except Exception as e:  # noqa: BLE001 - report whatever the capture hit
        return {"graph_error": f"{type(e).__name__}: {e}"[:300]}
    return {"cascade_graph_s": t["cascade_s"], "flat_graph_s": t["flat_s"],
            "fraction_of_bound_graph": t["flat_s"] / t["cascade_s"] / bound}


def matmul_gflops(device: str, size: int = 1024, reps: int = 10) -> float:
    """Float32 matmul rate (GFLOP/s) on ``device`` with the current torch threads."""
    a = torch.randn(size, size, device=device)
    b = torch.randn(size, size, device=device)
    timer = _timer(device)
    for _ in range(3):
        a @ b
    best = min(timer(lambda: a @ b)[1] for _ in range(reps))
    return 2 * size**3 / best / 1e9


def bench_one(P, n, S, heads, device, impl, reps, with_torch_native, gflops=None) -> dict:
    hq, hkv, d = heads
    sc = make_scenario(1, n, P, S, hq, hkv, d, page_size=1, device=device, seed=P + n + S,
                       vary_suffix=False)
    gqa = hq // hkv
    casc = CascadeDecode(sc.levels(), hkv, gqa, impl)
    flat = CascadeDecode([sc.flat()], hkv, gqa, impl)
    fns = {
        "cascade_s": lambda: casc.run(sc.q, sc.k_cache, sc.v_cache, sc.scale),
        "flat_s": lambda: flat.run(sc.q, sc.k_cache, sc.v_cache, sc.scale),
    }
    if with_torch_native:
        fns["torch_native_s"] = _torch_native_fn(sc)
    outs = {k: f() for k, f in fns.items()}  # warm-up, and the outputs for the exactness check
    timer = _timer(device)
    times: dict[str, list[tuple[float, float]]] = {k: [] for k in fns}
    for _ in range(reps):  # interleaved, so load changes hit every variant alike
        for k, f in fns.items():
            times[k].append(timer(f))
    ref = outs["flat_s"][0].double()
    max_diff = (outs["cascade_s"][0].double() - ref).abs().max().item()
    elem = sc.k_cache.element_size() * hkv * d * 2  # bytes per KV token (K and V)
    row = {"device": device, "P": P, "n": n, "S": S, "impl": casc.impl}
    for k, ts in times.items():
        # Best of reps: the least disturbed by other processes. "<x>_s" is compute time (see
        # _timer); "<x>_wall_s" is wall-clock time, which on a shared CPU includes waiting.
        row[k] = min(c for _, c in ts)
        row[k.replace("_s", "_median_s")] = statistics.median(c for _, c in ts)
        row[k.replace("_s", "_wall_s")] = min(w for w, _ in ts)
    bound = n * (P + S) / (P + n * S)
    row.update(
        bound=bound,
        speedup=row["flat_s"] / row["cascade_s"],
        fraction_of_bound=row["flat_s"] / row["cascade_s"] / bound,
        kv_bytes_flat=sum(lv.kv_tokens_read() for lv in [sc.flat()]) * elem,
        kv_bytes_cascade=sum(lv.kv_tokens_read() for lv in sc.levels()) * elem,
        max_abs_diff_vs_flat=max_diff,
    )
    if with_torch_native:
        row["speedup_vs_torch_native"] = row["torch_native_s"] / row["cascade_s"]
    if device == "cuda":
        row.update(_graph_rows(fns, bound))
    if gflops:
        flops = 4 * n * hq * d * (P + S)  # QK^T and PV, identical for flat and cascade
        row.update(matmul_gflops=gflops, compute_floor_s=flops / (gflops * 1e9))
        row["compute_bound_speedup"] = row["flat_s"] / row["compute_floor_s"]
    return row


def run_kernel_bench(device="cpu", impl="auto", heads=(32, 8, 128), reps=3, grid=None,
                     with_torch_native=None, log=print) -> list[dict]:
    """Every (P, n, S) of the grid; returns the JSON rows."""
    grid = grid or [(P, n, S) for P in GRID_P for n in GRID_N for S in GRID_S]
    if with_torch_native is None:
        with_torch_native = device == "cpu"
    gflops = matmul_gflops(device)
    log(f"float32 matmul: {gflops:.0f} GFLOP/s")
    rows = []
    for P, n, S in grid:
        row = bench_one(P, n, S, heads, device, impl, reps, with_torch_native, gflops)
        rows.append(row)
        tn = f" torch_native {row['torch_native_s'] * 1e3:8.1f} ms" if with_torch_native else ""
        nd = 3 if device == "cuda" else 1  # GPU steps take microseconds
        graph = (f"; graphs {row['fraction_of_bound_graph']:.0%}"
                 if "fraction_of_bound_graph" in row else row.get("graph_error", ""))
        log(f"P={P:5d} n={n:2d} S={S:3d}  flat {row['flat_s'] * 1e3:8.{nd}f} ms  cascade "
            f"{row['cascade_s'] * 1e3:7.{nd}f} ms  x{row['speedup']:.2f} of bound "
            f"{row['bound']:.2f} ({row['fraction_of_bound']:.0%}{graph}; compute floor allows x"
            f"{row['compute_bound_speedup']:.1f}){tn}")
    return rows
