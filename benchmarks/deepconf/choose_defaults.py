"""DeepConf's defaults from every model's frontier tuning split (issue 13, item 4).

    python benchmarks/deepconf/choose_defaults.py        # -> results/deepconf_defaults.json + PNG

Reads the levers tables that ``bench_frontier.py replay`` wrote for each model (the tuning
split only: the reported split never chooses), applies
:data:`frontier_report.CHOICE_RULE_ACROSS` and writes the ranking, the chosen lever's fields
and whether :class:`sglang_pr.deepconf.config.DeepConfConfig`'s defaults are those fields
(``config_matches``; exit 1 when they are not, so a stale default is loud). One model's
table can pick a lever that another model's contradicts (each result's own ``chosen_lever``);
the defaults serve every model, so they come from all of them.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from frontier_report import CHOICE_RULE_ACROSS, choose_across  # noqa: E402

from sglang_pr.benchmark_meta import run_metadata  # noqa: E402
from sglang_pr.deepconf.config import DeepConfConfig  # noqa: E402
from sglang_pr.optional import require_or_exit  # noqa: E402

RESULTS = Path(__file__).resolve().parents[1] / "results"
INPUTS = [RESULTS / "deepconf_frontier.json", RESULTS / "deepconf_frontier_smollm2-135m.json"]


def config_mismatches(fields: dict) -> dict:
    """The chosen fields the config's defaults differ on: {field: [default, chosen]}. The vote
    is compared as used (``weighted`` None means weighted for DeepConf methods)."""
    default, chosen = DeepConfConfig(), DeepConfConfig(**fields)
    out = {k: [getattr(default, k), v] for k, v in fields.items()
           if k != "weighted" and getattr(default, k) != v}
    if default.use_weighted_vote != chosen.use_weighted_vote:
        out["weighted"] = [default.weighted, fields.get("weighted")]
    return out


def run(paths: list[Path], out: Path) -> dict:
    tables, sources = {}, []
    for path in paths:
        data = json.loads(path.read_text())
        if not data.get("levers"):
            raise SystemExit(f"--results: {path} has no levers table (a replay with a tuning "
                             "split writes one)")
        tables[data["model"]] = data["levers"]
        sources.append({"path": str(path.relative_to(RESULTS.parent.parent)
                                    if path.is_relative_to(RESULTS.parent.parent) else path),
                        "model": data["model"], "date": data["date"],
                        "command": data["command"], "n_questions": data["n_questions"],
                        "model_choice": data.get("chosen_lever")})
    choice = choose_across(tables)
    chosen = choice["levers"][0]
    result = {**run_metadata(), "model": sorted(tables), "from": sources,
              "choice_rule": CHOICE_RULE_ACROSS, "chosen_lever": choice["chosen"],
              "chosen_fields": chosen["fields"],
              "config_mismatches": config_mismatches(chosen["fields"]),
              "levers": choice["levers"]}
    result["config_matches"] = not result["config_mismatches"]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    plot(result, out.with_suffix(".png"))
    return result


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    levers, models = result["levers"], result["model"]
    fig, ax = plt.subplots(figsize=(8, 0.35 * len(levers) + 1.5))
    height = 0.8 / len(models)
    for i, m in enumerate(models):  # one bar per model; a missing fraction drawn at 1.5
        fracs = [lv["per_model"][m]["saturation_fraction"] for lv in levers]
        ys = [j + i * height for j in range(len(levers))]
        ax.barh(ys, [1.5 if f is None else f for f in fracs], height, label=m, alpha=0.8)
    ax.axvline(0.5, color="k", ls=":", label="issue 13's 0.5x")
    ax.set_yticks([j + 0.4 - height / 2 for j in range(len(levers))])
    ax.set_yticklabels([f"{lv['name']} ({lv['points_goal_met']} pts ok)" for lv in levers],
                       fontsize=7)
    ax.invert_yaxis()
    ax.set(xlabel="tokens vs SC's at SC's saturation (tuning splits; 1.5 = never reached)")
    ax.set_title(f"levers in the rule's order; chosen: {result['chosen_lever']}", fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--results", nargs="+", type=Path, default=INPUTS,
                    help="bench_frontier replay JSONs, one per model")
    ap.add_argument("--out", type=Path, default=RESULTS / "deepconf_defaults.json")
    args = ap.parse_args(argv)
    require_or_exit([("matplotlib", "bench", "the levers plot")])
    for path in args.results:
        if not path.exists():
            raise SystemExit(f"--results: no file {path}")
    result = run([p.resolve() for p in args.results], args.out)
    for lv in result["levers"]:
        worst = lv["worst_saturation_fraction"]
        print(f"{lv['name']:>32} {lv['points_goal_met']:>2} points ok, worst fraction "
              f"{'never' if worst is None else f'{worst:.3f}'}, tokens x{lv['relative_tokens']:.2f}")
    print(f"chosen: {result['chosen_lever']} {result['chosen_fields']}")
    if not result["config_matches"]:
        print(f"DeepConfConfig's defaults differ: {result['config_mismatches']}")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
