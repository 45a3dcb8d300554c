"""The report side of ``model_quality.py``: the ``models`` entries, how a run merges into the
result file, and the plot (kept apart so the benchmark stays about measuring)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from sglang_pr.optional import require_or_exit

SHIPPED_NAME = "tiny-reasoner"
# The keys every ``models`` entry has (None where a run could not measure one).
ENTRY_KEYS = ("model", "dataset", "extractor", "n_questions", "samples", "temperature",
              "max_new_tokens", "pass_at_1", "majority_at_n", "auroc_within", "auroc_across",
              "confidence", "mean_trace_tokens", "truncated_share", "sampling_wall_s", "date",
              "command")


def shipped_entry(top: dict) -> dict:
    """The shipped model's ``models`` entry, from the top-level keys it was recorded in."""
    n = top["n_samples"]
    w16 = next((c for c in top.get("confidence", []) if c.get("window") == 16), {})
    cfg = top.get("config", {})
    auroc_across = w16.get("auroc")
    return {"model": SHIPPED_NAME, "dataset": "sglang_pr.model.task held-out split",
            "extractor": "task", "n_questions": top["n_questions"], "samples": n,
            "temperature": cfg.get("temperature"), "max_new_tokens": cfg.get("max_new_tokens"),
            "pass_at_1": round(top["pass_at_1"], 4),
            "majority_at_n": round(top[f"majority_at_{n}"], 4),
            "auroc_within": top.get("auroc_within_w16"),
            "auroc_across": None if auroc_across is None else round(auroc_across, 4),
            "confidence": "lowest_group, window 16",
            "mean_trace_tokens": round(top["mean_trace_tokens"], 1),
            "truncated_share": round(top.get("unfinished_traces", 0) / (n * top["n_questions"]), 4),
            "sampling_wall_s": top.get("sampling", {}).get("wall_s"),
            "date": top.get("date"), "command": top.get("command")}


def merge_results(old: Optional[dict], top: Optional[dict], entry: Optional[dict]) -> dict:
    """The result file after a run: ``top`` (a shipped-task run) replaces the top-level keys,
    ``entry`` (a dataset run) replaces the entry of its (model, dataset); the rest is kept.
    The shipped model's entry is always re-derived from the top-level keys."""
    out = dict(old or {})
    models = list(out.pop("models", []))
    if top is not None:
        out = dict(top)
    new = [shipped_entry(out)] if "pass_at_1" in out else []
    if entry is not None:
        new.append({k: entry.get(k) for k in ENTRY_KEYS} | entry)  # every key, None if unmeasured
    replaced = {(e["model"], e["dataset"]) for e in new}
    kept = [m for m in models if (m.get("model"), m.get("dataset")) not in replaced]
    out["models"] = sorted(kept + new, key=lambda e: (e["model"] != SHIPPED_NAME, e["model"]))
    return out


def _short(dataset: str) -> str:
    return Path(dataset).stem if dataset.endswith(".jsonl") else "own task"


def plot(result: dict, path: Path) -> None:
    """Left: the shipped model's accuracy by number of steps; right: pass@1 and majority@N of
    every ``models`` entry."""
    require_or_exit([("matplotlib", "bench", "the plot")])  # main checked it already
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.5))
    if "by_steps" in result:
        steps = sorted(result["by_steps"], key=int)
        n = result["n_samples"]
        for key, label in (("pass_at_1", "pass@1"), ("majority", f"majority@{n}")):
            left.plot([int(s) for s in steps], [result["by_steps"][s][key] for s in steps],
                      marker="o", label=label)
        left.set_title(f"{SHIPPED_NAME}, own task, by operations in the question", fontsize=9)
        left.set_xlabel("operations in the question")
        left.legend()
    left.set_ylabel("accuracy")
    left.set_ylim(0, 1.02)
    left.grid(alpha=0.3)
    entries = result.get("models", [])
    xs = range(len(entries))
    right.bar([x - 0.2 for x in xs], [e["pass_at_1"] for e in entries], 0.4, label="pass@1")
    right.bar([x + 0.2 for x in xs], [e["majority_at_n"] for e in entries], 0.4,
              label="majority@N")
    right.set_xticks(list(xs), [f"{e['model']}\n{_short(e['dataset'])}, {e['n_questions']} q\n"
                                f"N={e['samples']}, T={e['temperature']}" for e in entries],
                     fontsize=7)
    right.set_ylim(0, 1.02)
    right.set_title("per model (benchmarks/results/model_quality.json: models)", fontsize=9)
    right.grid(alpha=0.3, axis="y")
    right.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
