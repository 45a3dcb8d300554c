"""Sizing the Medusa tree to the hardware: expected accepted tokens per unit of verify cost.

On a GPU a verify step of 64 tree nodes costs about what one decode token costs, so the tree is
sized by acceptance alone. On a CPU each node adds real work, so the tree is chosen here from
two measurements:

* ``accuracy[d][r]``: P(head d+1's rank-r token is right), from the trained heads on held-out
  prompts (``train.topk_accuracy``);
* ``cost_ms[n]``: the time of one decode step that verifies ``n`` tree nodes (root included)
  for one request, measured on this machine (:func:`measure_step_cost`; the benchmark script
  ``benchmarks/medusa/verify_cost.py`` writes it as JSON, ``--verify-cost`` reads it).

The tree for each measured size is the greedy best tree of that size (``build_sparse_tree``,
priority order, so the size-n tree is a prefix of the largest one); its rate is
``expected_accept_length / cost_ms[n]`` tokens per ms, and the size with the highest rate wins.
Plain decoding is the ``n = 1`` point (one token per step, no heads), so ``rate / rate_plain``
is the speedup the independence model predicts.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Sequence

import torch

from sglang_pr.medusa.config import Path_
from sglang_pr.medusa.tree import build_sparse_tree, expected_accept_length


def read_cost(path: str | Path) -> dict[int, float]:
    """``{"cost_ms": {"1": 95.0, "8": 101.0, ...}}`` -> {1: 95.0, 8: 101.0, ...}."""
    p = Path(path)
    try:
        data = json.loads(p.read_text())
        cost = {int(n): float(ms) for n, ms in data["cost_ms"].items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        raise ValueError(f"{p}: not a verify-cost JSON with a 'cost_ms' object ({e})") from None
    if 1 not in cost or len(cost) < 2 or min(cost.values()) <= 0:
        raise ValueError(f"{p}: cost_ms needs node count 1 (plain decoding) and at least one "
                         f"tree size, all positive")
    return cost


def choose_tree(accuracy: Sequence[Sequence[float]], cost_ms: dict[int, float]
                ) -> tuple[list[Path_], list[dict]]:
    """(best tree, one row per measured size: nodes, expected tokens/step, ms, speedup)."""
    sizes = sorted(n for n in cost_ms if n >= 2)
    full = build_sparse_tree(accuracy, max(sizes))
    plain_rate = 1.0 / cost_ms[1]
    rows, best = [], None
    for n in sizes:
        tree = full[: n - 1]
        expected = expected_accept_length(tree, accuracy)
        speedup = expected / cost_ms[n] / plain_rate
        rows.append({"nodes": len(tree) + 1, "expected_tokens_per_step": round(expected, 3),
                     "cost_ms": round(cost_ms[n], 2), "predicted_speedup": round(speedup, 3)})
        if best is None or speedup > best[0]:
            best = (speedup, tree)
    return best[1], rows


@torch.no_grad()
def measure_step_cost(model, heads, node_counts: Sequence[int], prefix_len: int = 160,
                      repeats: int = 7, seed: int = 0) -> dict[int, float]:
    """Fastest ms of one batch-1 step verifying n nodes over a cached ``prefix_len`` prefix.

    The minimum over repeats, not the median: on a shared machine the other processes only
    ever add time, so the fastest run is the closest to the step's own cost.

    A step = the base model's forward of n new tokens over the KV cache (transformers, this
    process) + the heads' top-k on the winning position (n > 1 only: plain decoding has no
    heads). The tree mask does not change the work of a dense attention, so a causal block of
    n tokens costs what the tree costs. Runs are interleaved across sizes (round-robin) so a
    change in the machine's load touches every size alike.
    """
    from transformers import DynamicCache

    gen = torch.Generator().manual_seed(seed)
    vocab = model.config.vocab_size
    prefix = torch.randint(0, vocab, (1, prefix_len), generator=gen)
    cache = DynamicCache()
    model(input_ids=prefix, past_key_values=cache, use_cache=True)
    times: dict[int, list[float]] = {n: [] for n in node_counts}
    for _ in range(repeats):
        for n in node_counts:
            ids = torch.randint(0, vocab, (1, n), generator=gen)  # [1, n]
            pos = torch.arange(prefix_len, prefix_len + n).view(1, -1)
            t0 = time.perf_counter()
            out = model.model(input_ids=ids, past_key_values=cache, position_ids=pos,
                              use_cache=True)
            hidden = out.last_hidden_state[0]  # [n, H]
            logits = model.lm_head(hidden)  # [n, V]: the verify logits of every node
            logits.argmax(-1)
            if n > 1:
                root = logits[-1:].argmax(-1) if heads.root_input else None
                heads.topk(hidden[-1:], 10, root)
            times[n].append((time.perf_counter() - t0) * 1000)
            cache.crop(prefix_len)
    return {n: min(v) for n, v in times.items()}
