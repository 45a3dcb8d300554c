"""Does the model's confidence rank its own traces? Shipped model vs a calibrated candidate.

    python benchmarks/model_confidence.py --models sglang_pr/assets/tiny-reasoner DIR \\
        --temperatures 0.6 1.0 --n-questions 200

For each model and temperature: 32 traces per held-out question from the transformers sampler
(``sglang_pr.model.evaluate``, the same numbers as the server up to sampling noise), then
pass@1, majority@4/8/32, and how well each score ranks right above wrong traces, within a
question (issue 13's ``auroc_within``, mean over questions with both) and across questions:

* ``lowest_group_w16`` / ``_w8``: DeepConf's online signal (``deepconf.summary``);
* ``sampled_loglik``: the sum of the sampled tokens' log-probabilities, which DeepConf does not
  use: it is the ceiling of what the model itself knows about which of its traces slipped;
* ``doubt``: how often right and wrong traces contain a calibrated model's doubt line
  (``sglang_pr.model.calibrate``; 0 for a model without one).

Questions: held-out split (seed 0) minus the 100 (seed 7) used while choosing the calibration
recipe, so tuning and reported data are disjoint. Writes benchmarks/results/model_confidence.json
and .png.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from sglang_pr.benchmark_meta import run_metadata
from sglang_pr.data.scoring import score_samples
from sglang_pr.deepconf.summary import summarize
from sglang_pr.model import evaluate, task
from sglang_pr.model.calibrate import CalibrateConfig
from sglang_pr.optional import require_or_exit

RESULTS = Path(__file__).resolve().parent / "results"
TUNING = (100, 7)  # heldout_set(n, seed) the recipe was chosen on
MAJORITY_AT = (4, 8, 32)
DOUBT_LEAD = CalibrateConfig().doubt_lead


def questions(n: int) -> list[task.Problem]:
    tuning = {p.prompt for p in task.heldout_set(*TUNING)}
    pool = task.heldout_set(n + TUNING[0], seed=0)
    return [p for p in pool if p.prompt not in tuning][:n]


def has_doubt(text: str) -> bool:
    return any(line.startswith(DOUBT_LEAD) for line in text.split("\n"))


def measure(traces: list[list[evaluate.Trace]], problems: list[task.Problem]) -> dict:
    truths = [str(p.answer) for p in problems]
    answers = [[None if (a := task.extract_answer(t.text)) is None else str(a) for t in ts] for ts in traces]
    scores = {
        "lowest_group_w16": lambda t: summarize(t.confs, 16).lowest_group,
        "lowest_group_w8": lambda t: summarize(t.confs, 8).lowest_group,
        "sampled_loglik": lambda t: sum(t.logprobs),
    }
    out = {"pass_at_1": score_samples(truths, answers)["pass_at_1"]}
    for k in (k for k in MAJORITY_AT if k <= len(answers[0])):
        out[f"majority_at_{k}"] = score_samples(truths, [a[:k] for a in answers])["majority_at_n"]
    for name, fn in scores.items():
        s = score_samples(truths, answers, [[fn(t) for t in ts] for ts in traces])
        out[name] = {k: s[k] for k in ("auroc_within", "auroc_across", "auroc_within_questions")}
    doubt = {True: [], False: []}  # is the trace right -> has it a doubt line, per trace
    for truth, ts, ans in zip(truths, traces, answers):
        for t, a in zip(ts, ans):
            doubt[a == truth].append(has_doubt(t.text))
    right, wrong = doubt[True], doubt[False]
    out["doubt_rate"] = {"right": sum(right) / max(1, len(right)), "wrong": sum(wrong) / max(1, len(wrong))}
    out["mean_trace_tokens"] = sum(len(t.token_ids) for ts in traces for t in ts) / sum(map(len, traces))
    return out


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = result["rows"]
    labels = [f"{Path(r['model']).name}\nT {r['temperature']}" for r in rows]
    fig, ax = plt.subplots(figsize=(7, 3.5))
    x = range(len(rows))
    for i, (key, name) in enumerate((("lowest_group_w16", "lowest group (w16)"), ("sampled_loglik", "sampled log-lik"))):
        ax.bar([j + 0.38 * i for j in x], [r[key]["auroc_within"] for r in rows], width=0.36, label=name)
    ax.axhline(0.75, color="k", ls="--", lw=1, label="issue 13 target")
    ax.set_xticks([j + 0.19 for j in x], labels, fontsize=8)
    ax.set_ylim(0.4, 1.0)
    ax.set_ylabel("AUROC within a question")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", type=Path, nargs="+", required=True)
    ap.add_argument("--temperatures", type=float, nargs="+", default=[0.6, 1.0])
    ap.add_argument("--n-questions", type=int, default=200)
    ap.add_argument("--samples", type=int, default=32)
    ap.add_argument("--threads", type=int, default=1, help="1 on a busy box (see TEAM_NOTES)")
    ap.add_argument("--out", type=Path, default=RESULTS / "model_confidence.json")
    args = ap.parse_args(argv)
    require_or_exit([("matplotlib", "bench", "the plot")])  # before minutes of sampling
    torch.set_num_threads(args.threads)
    problems, rows, start = questions(args.n_questions), [], time.time()
    for model_dir in args.models:
        model, _ = evaluate.load(model_dir)
        for temperature in args.temperatures:
            traces = evaluate.sample_traces(model, problems, args.samples, temperature, seed=1)
            rows.append({"model": str(model_dir), "temperature": temperature, **measure(traces, problems)})
            print(json.dumps(rows[-1]), flush=True)
    result = {"benchmark": "model_confidence", "rows": rows, "n_questions": len(problems), "samples": args.samples,
              "duration_s": round(time.time() - start, 1), **run_metadata(sys.argv)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    plot(result, args.out.with_suffix(".png"))


if __name__ == "__main__":
    main()
