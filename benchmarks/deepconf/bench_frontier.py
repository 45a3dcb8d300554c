"""Accuracy-per-token frontier: self-consistency at every N vs DeepConf at budgets (issue 13).

    python benchmarks/deepconf/bench_frontier.py collect            # start a server, sample pools
    python benchmarks/deepconf/bench_frontier.py collect --resume   # continue an interrupted one
    python benchmarks/deepconf/bench_frontier.py replay             # -> results/deepconf_frontier.*

``collect``: for every question of a tuning split and a disjoint reported split, one
``/generate`` with ``sampling_params.n = --pool`` traces at ``--temperature``, tracked with
``custom_params.deepconf`` and no threshold (per-token confidences, nothing stops early). Each
question is written to its own file under ``--pool-dir`` (default
``~/.cache/sglang_pr/frontier/<model>-T<temp>-P<pool>-<source>/``) as soon as it is done, so
``--resume`` continues where a run stopped; a server this script started is stopped on every
exit. Questions: the shipped task's held-out split (reported: the first ``--questions`` of
``heldout_set``, the same questions as ``bench_deepconf.py``; tuning: held-out questions of
another seed, none among the first 1000 of seed 0, so disjoint from every demo run), or
``--dataset`` / ``--tune-dataset`` JSONL files of ``{"question", "answer"}`` lines.

``replay``: offline, no server. SC's curve at ``--ns`` from the pools
(:func:`sglang_pr.deepconf.frontier.sc_curve`), and every DeepConf variant at ``--budgets``
through the real ``GroupRun`` on the same pools (:mod:`sglang_pr.deepconf.replay`,
``--replays`` seeded trace orders per question), each point with its paired bootstrap interval
against SC at the same tokens. Writes ``benchmarks/results/deepconf_frontier.json`` for the
shipped model, ``deepconf_frontier_<model>.json`` for another (issue 13's schema: ``points`` on
the reported split, each naming its model, ``tuning.points`` on the tuning split, plus machine,
versions, date, command) and a PNG beside it. ``wall_s`` is estimated: decode steps of the
replayed group (concurrency modelled) × seconds per step measured while collecting (at batch
``--pool`` x ``--concurrency``).

A real chat model (SmolLM2, ~75-token traces, ~40 tokens/s per question on 2 cores):

    python benchmarks/deepconf/bench_frontier.py collect --model-path smollm2-135m \
        --dataset sglang_pr/assets/datasets/arith_words_heldout.jsonl \
        --tune-dataset sglang_pr/assets/datasets/arith_words_dev.jsonl --extractor last_number \
        --questions 300 --tune-questions 32 --pool 16 --temperature 0.7 --max-new-tokens 160 \
        --concurrency 4
    python benchmarks/deepconf/bench_frontier.py replay --pool-dir \
        ~/.cache/sglang_pr/frontier/smollm2-135m-T0.7-P16-arith_words_heldout \
        --ns 1 2 4 8 16 --budgets 8 16 --replays 2

A larger pool from a finished smaller one: the same collect flags with ``--pool 32
--grow-from <the P16 dir>`` keeps each question's 16 traces and samples only 16 more (half the
cost of a fresh pool of 32); each question records its two requests, and replay's seconds per
step counts each request's own decode steps (``collect_batch`` is concurrency x the largest
request). The recorded SmolLM2 frontier (2026-12-07) is that 32-trace pool, with 68 more
tuning questions of 32 fresh traces each (what ``collect ... --pool 32 --tune-questions 100
--resume`` samples; ~90 + ~35 min here), replayed with

    python benchmarks/deepconf/bench_frontier.py replay --pool-dir \
        ~/.cache/sglang_pr/frontier/smollm2-135m-T0.7-P32-arith_words_heldout --replays 2

The defaults come from the tuning splits of both models' replays:
``benchmarks/deepconf/choose_defaults.py`` (run it after a replay; it exits 1 when the
config's defaults are no longer the choice).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from frontier_collect import (  # noqa: E402
    POOL_ROOT,
    SPLITS,
    UsageError,
    pool_dir,
    requests_of,
    run_collect,
)
from frontier_report import CHOICE_RULE, choose, format_split, levers, plot, verdict  # noqa: E402

from sglang_pr.benchmark_meta import run_metadata  # noqa: E402
from sglang_pr.deepconf.config import SAMPLING, SHIPPED_MODEL_WINDOW, DeepConfConfig  # noqa: E402
from sglang_pr.deepconf.extract import get_extractor  # noqa: E402
from sglang_pr.deepconf.frontier import (  # noqa: E402
    DEEPCONF_BUDGETS,
    MethodPoint,
    QuestionPool,
    build_frontier,
    default_grid,
    sc_curve,
)
from sglang_pr.deepconf.replay import read_pool_split, replay_questions  # noqa: E402
from sglang_pr.optional import require_or_exit  # noqa: E402
from sglang_pr.validation import ConfigError, parse_model  # noqa: E402

RESULTS = Path(__file__).resolve().parents[1] / "results"
_DEFAULTS = DeepConfConfig.model_fields
DEFAULT_METHOD = _DEFAULTS["method"].default
# Reported split: the default method (the config's own warm-up rule, voter floor and vote),
# the other named method with the same, the default weighted by the lowest group instead of
# the tail, the default with a plain vote (the default until choose_defaults.py weighed both
# models' tuning splits) and the paper's settings.
PAPER = {"n_init": 16, "min_voters": None, "weighted": True, "vote_confidence": "lowest_group"}
VARIANTS = [{"name": "deepconf_high", "method": "deepconf_high"},
            {"name": "deepconf_low", "method": "deepconf_low"},
            {"name": "deepconf_high_lowest", "method": "deepconf_high",
             "vote_confidence": "lowest_group"},
            {"name": "deepconf_high_plain", "method": "deepconf_high", "weighted": False},
            {"name": "deepconf_low_paper", "method": "deepconf_low", **PAPER}]
# Tuning split: one lever at a time from the paper's settings, then around the floor and
# the small warm-up. Every field spelled out, so the table does not move with the defaults.
FLOOR = {"min_voters": 4, "n_init": None, "warmup_fraction": 0.125, "weighted": False,
         "vote_confidence": "lowest_group"}
TUNE_VARIANTS = [
    {"name": "paper_low", "method": "deepconf_low", **PAPER},
    {"name": "paper_high", "method": "deepconf_high", **PAPER},
    {"name": "paper_low+floor4", "method": "deepconf_low", **PAPER, "min_voters": 4},
    {"name": "paper_low+warmup_votes_all", "method": "deepconf_low", **PAPER,
     "warmup_votes": "all"},
    {"name": "low+warmup/8", "method": "deepconf_low", **FLOOR, "min_voters": None},
    {"name": "low+floor4+warmup/8", "method": "deepconf_low", **FLOOR},
    {"name": "low+floor4+warmup/8+weighted", "method": "deepconf_low", **FLOOR,
     "weighted": True},
    {"name": "low+floor4+warmup/4", "method": "deepconf_low", **FLOOR, "warmup_fraction": 0.25},
    {"name": "low+floor2+warmup/8", "method": "deepconf_low", **FLOOR, "min_voters": 2},
    {"name": "high+floor4+warmup/8", "method": "deepconf_high", **FLOOR},
    {"name": "high+floor4+warmup/8+weighted", "method": "deepconf_high", **FLOOR,
     "weighted": True},
    # which summary weighs the vote (the threshold stays the lowest group's)
    *({"name": f"high+floor4+warmup/8+weighted+{kind}", "method": "deepconf_high", **FLOOR,
       "weighted": True, "vote_confidence": kind} for kind in ("bottom10", "tail", "mean")),
    {"name": "low+floor4+warmup/8+tau0.8", "method": "deepconf_low", **FLOOR, "tau": 0.8},
    {"name": "low+floor4+warmup/8+window2048", "method": "deepconf_low", **FLOOR,
     "window": 2048},
]
def variant_config(variant: dict, budget: int, args, k: int) -> DeepConfConfig:
    """A variant's group config at ``budget``; a bad field is one line naming it (exit 2)."""
    if not isinstance(variant, dict) or not isinstance(variant.get("name"), str):
        raise UsageError(f"--variants: each variant needs a \"name\": {variant!r}")
    if variant.get("k", k) != k:  # replay cannot re-rank: confidences were sampled with k
        raise UsageError(f"--variants {variant['name']}.k: the pool was sampled with k={k}")
    fields = {"extractor": args.extractor, **{key: v for key, v in variant.items()
                                              if key != "name"}}
    fields.setdefault("window", args.window)
    if fields.get("n_init") is not None:  # a fixed warm-up is cut to small budgets
        fields["n_init"] = min(fields["n_init"], budget)
    fields.setdefault("width", args.width or budget)
    try:
        return parse_model(DeepConfConfig, {**fields, "budget": budget, "k": k},
                           f"--variants {variant['name']}")
    except ConfigError as e:
        raise UsageError(str(e)) from None


def replay_points(questions: list[dict], variant: dict, args, k: int,
                  step_s: float) -> list[MethodPoint]:
    # the default method's points: a variant that overrides nothing but (at most) the method,
    # and leaves it at the config's default
    default = set(variant) <= {"name", "method"} and \
        variant.get("method", DEFAULT_METHOD) == DEFAULT_METHOD
    out = []
    for budget in args.budgets:
        hits, tokens, steps = replay_questions(
            variant_config(variant, budget, args, k), [q["traces"] for q in questions],
            [q["truth"] for q in questions], replays=args.replays, seed=args.seed, k=k)
        out.append(MethodPoint(variant["name"], budget, hits, tokens,
                               wall_s=float(steps.sum() * step_s), default=default))
    return out


def seconds_per_step(questions: list[dict]) -> float:
    """Seconds per decode step while collecting: a request's traces ran at once, so it took
    about (its longest trace) steps."""
    reqs = [r for q in questions for r in requests_of(q)]
    return sum(r["wall_s"] for r in reqs) / sum(r["steps"] for r in reqs)


def replay_split(questions: list[dict], args, k: int, variants: list[dict]) -> dict:
    extract = get_extractor(args.extractor)
    pools = [QuestionPool([extract(t.text) for t in q["traces"]],
                          [t.tokens for t in q["traces"]], q["truth"]) for q in questions]
    curve = sc_curve(pools, ns=args.ns, subsets=args.subsets, seed=args.seed)
    step_s = seconds_per_step(questions)
    points = [p for v in variants for p in replay_points(questions, v, args, k, step_s)]
    front = build_frontier(args.model_name, curve, points,
                           sc_wall_s=curve.makespan.sum(axis=0) * step_s, seed=args.seed)
    # questions in flight while collecting (--concurrency): step_s was measured at that x the
    # request size (the pool, or each part of a --grow-from pool)
    batch = max(q.get("concurrency", 1) for q in questions) * max(
        r["n"] for q in questions for r in requests_of(q))
    return {**front, "step_s": step_s, "collect_batch": batch, "n_questions": len(questions)}


def reuse_tuning(args, root: Path, n_tuning: int) -> dict | None:
    """The tuning split's replay from an earlier run's JSON (``--reuse-tuning``), checked to
    come from the same pool, questions and settings; None without the flag."""
    if not args.reuse_tuning:
        return None
    try:
        old = json.loads(Path(args.reuse_tuning).read_text())
        same = (old["pool"]["dir"] == str(root) and old["tuning"]["n_questions"] <= n_tuning
                and all(old["settings"][k] == getattr(args, k) for k in
                        ("budgets", "ns", "window", "width", "subsets", "seed",
                         "extractor")))
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise UsageError(f"--reuse-tuning: cannot read {args.reuse_tuning} ({e})") from None
    if not same:
        raise UsageError(f"--reuse-tuning: {args.reuse_tuning} was replayed on another pool, "
                         "question count or settings")
    return old


def default_out(model: str) -> Path:
    """One result file per model, all in the same schema (every point names its model)."""
    name = "deepconf_frontier" if model == "tiny-reasoner" else f"deepconf_frontier_{model}"
    return RESULTS / f"{name}.json"


def run_replay(args) -> dict:
    root = pool_dir(args)
    if not (root / "meta.json").exists():
        raise UsageError(f"--pool-dir: no pool at {root} (run `collect` first)")
    meta = json.loads((root / "meta.json").read_text())
    args.model_name = meta["model"]
    # a pool of a --dataset's questions is read by last_number unless --extractor says otherwise
    args.extractor = args.extractor or ("last_number" if isinstance(meta.get("source"), list)
                                        else "task")
    splits = {s: read_pool_split(root, s, args.max_questions or None) for s in SPLITS}
    if not splits["reported"] and not (args.partial and splits["tuning"]):
        raise UsageError(f"--pool-dir: {root} has no reported questions yet (--partial "
                         "replays the tuning questions collected so far)")
    grid_ns, grid_budgets = default_grid(meta["pool"])
    args.ns, args.budgets = args.ns or grid_ns, args.budgets or grid_budgets
    if not args.budgets:
        raise UsageError(f"--budgets: a pool of {meta['pool']} traces covers none of "
                         f"{list(DEEPCONF_BUDGETS)}; name smaller ones")
    for flag, values in (("--budgets", args.budgets), ("--ns", args.ns)):
        if max(values) > meta["pool"]:
            raise UsageError(f"{flag}: {max(values)} exceeds the pool of {meta['pool']} traces")
    variants = {"tuning": args.tune_variants, "reported": args.variants}
    for v in variants["tuning"] + variants["reported"]:
        for b in args.budgets:  # every config checked before any work
            variant_config(v, b, args, meta["k"])
    start = time.perf_counter()
    reused = reuse_tuning(args, root, len(splits["tuning"]))
    if reused:  # the questions the defaults were chosen on, not the ones collected since
        splits["tuning"] = splits["tuning"][:reused["tuning"]["n_questions"]]
    result = {s: replay_split(qs, args, meta["k"], variants[s])
              for s, qs in splits.items() if qs and not (s == "tuning" and reused)}
    if reused:
        result["tuning"] = reused["tuning"]
    rep = result.get("reported") or {"points": [], "saturation": {}, "step_s": None,
                                     "collect_batch": None}
    data = {**run_metadata(), "model": meta["model"], "points": rep["points"],
            "saturation": rep["saturation"], "step_s": rep["step_s"],
            "collect_batch": rep["collect_batch"],
            "partial": bool(args.partial or args.max_questions),
            "n_questions": {s: len(qs) for s, qs in splits.items()},
            "tuning": result.get("tuning"), "pool": {**meta, "dir": str(root)},
            "levers": (reused["levers"] if reused else levers(result["tuning"], variants["tuning"])
                       if "tuning" in result else None),
            "tuning_from": args.reuse_tuning, "choice_rule": CHOICE_RULE,
            "tuning_settings": reused["settings"] if reused else None,
            "not_covered": [{"budget": b, "why": f"needs a pool of {b} traces per question; "
                             f"this pool has {meta['pool']}"}
                            for b in DEEPCONF_BUDGETS if b > meta["pool"]],
            "settings": {k: getattr(args, k) for k in (
                "budgets", "ns", "variants", "tune_variants", "window", "width", "replays",
                "subsets", "seed", "extractor")},
            "replay_elapsed_s": time.perf_counter() - start,
            "wall_note": "wall_s estimated: replayed decode steps x step_s (seconds per step "
                         "measured while collecting, at batch collect_batch = pool x questions "
                         "in flight); summed over questions"}
    data["chosen_lever"] = choose(data["levers"] or [])
    data["verdict"] = verdict(data)
    out = Path(args.out or default_out(meta["model"]))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(data, indent=1))
    if data["points"] or data["tuning"]:
        plot(data, out.with_suffix(".png"))
    return data


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("part", choices=("collect", "replay"))
    ap.add_argument("--questions", type=int, default=300, help="reported split size")
    ap.add_argument("--tune-questions", type=int, default=300, help="tuning split size")
    ap.add_argument("--pool", type=int, default=128, help="traces sampled per question")
    ap.add_argument("--temperature", type=float, default=SAMPLING.temperature)
    ap.add_argument("--top-p", type=float, default=SAMPLING.top_p)
    ap.add_argument("--max-new-tokens", type=int, default=SAMPLING.max_new_tokens)
    ap.add_argument("--k", type=int, default=_DEFAULTS["k"].default, help="confidence top-k")
    ap.add_argument("--concurrency", type=int, default=1, help="collect: questions in flight "
                    "at once (each question's wall_s is then measured at batch concurrency x "
                    "pool)")
    ap.add_argument("--url", help="collect through a running server (else one is started)")
    ap.add_argument("--model-path", default=None, help="model to serve (default: shipped)")
    ap.add_argument("--model-name", default=None, help="name in the results (default: "
                    "tiny-reasoner, or the model folder's name)")
    ap.add_argument("--dataset", default=None, help='JSONL of {"question", "answer"} lines '
                    "(the reported split; also the tuning one without --tune-dataset)")
    ap.add_argument("--tune-dataset", default=None, help="JSONL of the tuning split")
    ap.add_argument("--extractor", default=None, help="answer extractor (default: task, or "
                    "last_number for a --dataset / a pool of a dataset's questions)")
    ap.add_argument("--pool-dir", default=None, help=f"pools (default: under {POOL_ROOT})")
    ap.add_argument("--resume", action="store_true", help="continue an interrupted collect")
    ap.add_argument("--grow-from", default=None, metavar="DIR", help="collect: start each "
                    "question from this smaller pool's traces (same questions and settings) "
                    "and sample only the rest")
    ap.add_argument("--partial", action="store_true", help="replay: the questions collected "
                    "so far, even with no reported split yet (the JSON says partial)")
    ap.add_argument("--max-questions", type=int, default=0,
                    help="replay: at most this many questions per split (0: all)")
    ap.add_argument("--ns", type=int, nargs="+", default=None, help="SC's N (default: "
                    "deepconf.frontier.default_grid of the pool)")
    ap.add_argument("--budgets", type=int, nargs="+", default=None, help="DeepConf budgets "
                    f"(default: those of {list(DEEPCONF_BUDGETS)} the pool covers)")
    ap.add_argument("--variants", type=json.loads, default=VARIANTS,
                    help='JSON list of {"name": ..., DeepConfConfig fields}')
    ap.add_argument("--tune-variants", type=json.loads, default=TUNE_VARIANTS,
                    help="variants (levers) for the tuning split; the JSON's levers table "
                    "reports each")
    ap.add_argument("--reuse-tuning", default=None, metavar="JSON",
                    help="take the tuning split's points and levers from an earlier replay's "
                    "JSON (same pool and settings) instead of replaying them again")
    ap.add_argument("--window", type=int, default=SHIPPED_MODEL_WINDOW)
    ap.add_argument("--width", type=int, default=0, help="concurrent traces (0: = budget)")
    ap.add_argument("--replays", type=int, default=4, help="seeded trace orders per question")
    ap.add_argument("--subsets", type=int, default=200, help="SC subsets per question and N")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None, help="result JSON (default: results/"
                    "deepconf_frontier.json for the shipped model, deepconf_frontier_<model>.json "
                    "for another; the PNG goes beside it)")
    args = ap.parse_args(argv)
    args.model_name = args.model_name or (Path(args.model_path).name.lower() if args.model_path
                                          else "tiny-reasoner")
    if args.part == "collect":  # replay takes it from the pool it reads
        args.extractor = args.extractor or ("last_number" if args.dataset else "task")
    for flag in ("variants", "tune_variants"):
        value = getattr(args, flag)
        if value is None:
            continue
        if isinstance(value, dict):  # one variant given as an object
            setattr(args, flag, value := [value])
        if not isinstance(value, list) or not value:
            raise UsageError(f"--{flag.replace('_', '-')}: must be a JSON list of objects")
    for flag in ("questions", "tune_questions", "pool", "concurrency", "replays", "subsets", "window", "k"):
        if getattr(args, flag) <= 0:
            raise UsageError(f"--{flag.replace('_', '-')}: must be > 0")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.part == "collect":
        run_collect(args)
    else:
        require_or_exit([("matplotlib", "bench", "the frontier plot")])  # before any work
        data = run_replay(args)
        for name, split in (("tuning", data["tuning"]), ("reported", data)):
            if split and split["points"]:
                print(format_split(name, split))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
