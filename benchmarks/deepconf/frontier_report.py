"""The report side of ``bench_frontier.py replay``: the levers table and the choice rule,
the plot, the printed summary (kept apart so the benchmark stays one screen per part)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Optional

import numpy as np

from sglang_pr.optional import require_or_exit


def levers(tuning: dict, variants: list[dict]) -> list[dict]:
    """What each variant (lever) did on the tuning split: per budget the gap to SC at the same
    tokens, its interval and the goal; and the saturation fraction."""
    out = []
    for v in variants:
        rows = [p for p in tuning["points"] if p["method"] == v["name"]]
        out.append({"name": v["name"], "fields": {k: x for k, x in v.items() if k != "name"},
                    "budgets_goal_met": sum(bool(p["goal_met"]) for p in rows),
                    "saturation_fraction": tuning["saturation"][v["name"]]["fraction"],
                    "per_budget": [{k: p[k] for k in ("budget", "accuracy",
                                                      "tokens_per_question", "diff_vs_sc",
                                                      "ci_vs_sc", "goal_met")} for p in rows]})
    return out


CHOICE_RULE = ("most budgets on or above SC's curve (goal_met), then the smallest token "
               "fraction at SC's saturation, then the fewest tokens summed over budgets")


def choose(table: list[dict]) -> Optional[str]:
    """The lever :data:`CHOICE_RULE` picks (tuning split only); marks it ``chosen``. With one
    model :data:`CHOICE_RULE_ACROSS` is the same rule (tokens relative to the cheapest lever
    order levers as the sums do), so it is that."""
    if not table:
        return None
    best = choose_across({"": table})["chosen"]
    for lever in table:
        lever["chosen"] = lever["name"] == best
    return best


CHOICE_RULE_ACROSS = ("most (model, budget) points on or above SC's curve (goal_met) over "
                      "every model's tuning split, then the smallest worst-model token fraction "
                      "at SC's saturation, then the fewest tokens (per model, tokens summed "
                      "over budgets relative to that model's cheapest lever; mean over models)")


def choose_across(tables: dict[str, list[dict]]) -> dict:
    """The lever :data:`CHOICE_RULE_ACROSS` picks from several models' levers tables (each
    one model's tuning split, the same lever names and fields in every table).

    Returns ``{"chosen": name, "levers": [{name, fields, per_model, points_goal_met,
    worst_saturation_fraction, relative_tokens}]}``, levers in the rule's order.
    """
    names = [[lever["name"] for lever in t] for t in tables.values()]
    if not tables or any(set(n) != set(names[0]) for n in names):
        raise ValueError(f"every model needs the same levers; got {dict(zip(tables, names))}")
    cheapest = {m: min(_tokens(lever) for lever in t) for m, t in tables.items()}
    rows = []
    for name in names[0]:
        by_model = {m: next(lever for lever in t if lever["name"] == name)
                    for m, t in tables.items()}
        fields = {json.dumps(lv["fields"], sort_keys=True) for lv in by_model.values()}
        if len(fields) > 1:
            raise ValueError(f"lever {name!r} has other fields in another model's table")
        fracs = [lv["saturation_fraction"] for lv in by_model.values()]
        rows.append({
            "name": name, "fields": next(iter(by_model.values()))["fields"],
            "per_model": {m: {"budgets_goal_met": lv["budgets_goal_met"],
                              "budgets": len(lv["per_budget"]),
                              "saturation_fraction": lv["saturation_fraction"],
                              "tokens": _tokens(lv)} for m, lv in by_model.items()},
            "points_goal_met": sum(lv["budgets_goal_met"] for lv in by_model.values()),
            "worst_saturation_fraction": None if None in fracs else max(fracs),
            "relative_tokens": float(np.mean([_tokens(lv) / cheapest[m]
                                              for m, lv in by_model.items()]))})
    rows.sort(key=lambda r: (-r["points_goal_met"], math.inf if r["worst_saturation_fraction"]
                             is None else r["worst_saturation_fraction"], r["relative_tokens"]))
    return {"chosen": rows[0]["name"], "levers": rows}


def _tokens(lever: dict) -> float:
    return sum(p["tokens_per_question"] for p in lever["per_budget"])


def plot(data: dict, path: Path) -> None:
    require_or_exit([("matplotlib", "bench", "the frontier plot")])  # main checked it already
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.8))
    split = "reported" if data["points"] else "tuning"  # a partial run: the tuning split
    points = data["points"] or data["tuning"]["points"]
    sc = [p for p in points if p["method"] == "sc"]
    xs, ys = [p["tokens_per_question"] for p in sc], [p["accuracy"] for p in sc]
    dense = np.geomspace(xs[0], xs[-1], 200)  # [200]: the interpolation is linear in tokens
    ax.plot(dense, np.interp(dense, xs, ys), "-", color="tab:gray")
    ax.plot(xs, ys, "o", color="tab:gray", label="self-consistency (N)")
    for x, y, p in zip(xs, ys, sc):
        ax.annotate(str(p["budget"]), (x, y), textcoords="offset points", xytext=(3, -10),
                    fontsize=7, color="tab:gray")
    for m in sorted({p["method"] for p in points} - {"sc"}):
        pts = sorted((p for p in points if p["method"] == m),
                     key=lambda p: p["tokens_per_question"])
        default = any(p["default"] for p in pts)  # drawn on top: another method may overlap it
        line, = ax.plot([p["tokens_per_question"] for p in pts], [p["accuracy"] for p in pts],
                        "D-" if default else "s--", label=m + (" (default)" if default else ""),
                        zorder=3 if default else 2, markersize=7 if default else 5,
                        markerfacecolor="none" if default else None)
        for p in pts:
            if p["ci_vs_sc"] is not None:  # the interval drawn around SC's value there
                sc_at = p["accuracy"] - p["diff_vs_sc"]
                ax.vlines(p["tokens_per_question"], sc_at + p["ci_vs_sc"][0],
                          sc_at + p["ci_vs_sc"][1], color=line.get_color(), alpha=0.5)
    ax.set(xscale="log", xlabel="generated tokens per question (all traces)",
           ylabel="accuracy (voted answer)")
    ax.set_title(f"{data['model']}, {split} split ({sc[0]['n_questions']} questions): bars = "
                 "SC at the same tokens + paired 95 % interval", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def format_split(name: str, split: dict) -> str:
    """One line per point (diff and interval vs SC at the same tokens), then saturation."""
    lines = [f"{name}: {split['points'][0]['n_questions']} questions"]
    for p in split["points"]:
        ci = "" if p["ci_vs_sc"] is None else " diff {:+.3f} [{:+.3f}, {:+.3f}] {}".format(
            p["diff_vs_sc"], *p["ci_vs_sc"], "ok" if p["goal_met"] else "MISS")
        lines.append(f"{p['method']:>22} {p['budget']:>4} acc {p['accuracy']:.3f} "
                     f"{p['tokens_per_question']:8.0f} tokens/q{ci}")
    for m, sat in split["saturation"].items():
        frac = "never" if sat["fraction"] is None else f"{sat['fraction']:.2f}"
        lines.append(f"{m:>22} at SC saturation {sat['saturation_accuracy']:.3f}: "
                     f"{frac} of SC's tokens")
    return "\n".join(lines)


def verdict(data: dict) -> dict:
    """Issue 13's goal for the default method on the reported split, said in numbers: the
    budgets on or above SC's curve, the ones missed, and the saturation fraction (<= 0.5)."""
    rows = [p for p in data["points"] if p["default"]]
    if not rows:
        return {"split": "reported", "default_method": None, "goal_met": None}
    method = rows[0]["method"]
    frac = data["saturation"][method]["fraction"]
    met = [p["budget"] for p in rows if p["goal_met"]]
    missed = [p["budget"] for p in rows if not p["goal_met"]]
    return {"split": "reported", "default_method": method, "budgets_on_or_above_sc": met,
            "budgets_below_sc": missed, "saturation_fraction": frac,
            "goal_met": not missed and frac is not None and frac <= 0.5}
