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
against SC at the same tokens. Writes ``benchmarks/results/deepconf_frontier.json`` (issue 13's
schema: ``points`` on the reported split, ``tuning.points`` on the tuning split, plus machine,
versions, date, command) and a PNG. ``wall_s`` is estimated: decode steps of the replayed group
(concurrency modelled) × seconds per step measured while collecting (at batch ``--pool``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sglang_pr.benchmark_meta import run_metadata
from sglang_pr.data import DatasetError, load_dataset
from sglang_pr.deepconf.config import SAMPLING, SHIPPED_MODEL_WINDOW, DeepConfConfig
from sglang_pr.deepconf.extract import get_extractor
from sglang_pr.deepconf.frontier import (
    DEEPCONF_BUDGETS,
    SC_NS,
    MethodPoint,
    QuestionPool,
    build_frontier,
    sc_curve,
)
from sglang_pr.deepconf.replay import (
    PoolTrace,
    read_pool_question,
    replay_questions,
    write_pool_question,
)
from sglang_pr.model import SHIPPED_MODEL_DIR, task
from sglang_pr.optional import require_or_exit
from sglang_pr.validation import ConfigError, parse_model

RESULTS = Path(__file__).resolve().parents[1] / "results"
POOL_ROOT = Path.home() / ".cache" / "sglang_pr" / "frontier"
SPLITS = ("tuning", "reported")
_DEFAULTS = DeepConfConfig.model_fields
DEFAULT_METHOD = _DEFAULTS["method"].default
VARIANTS = [{"name": "deepconf_low", "method": "deepconf_low"},
            {"name": "deepconf_high", "method": "deepconf_high"}]
# The tuning split avoids the first this-many held-out questions of seed 0 (the demo's and
# bench_deepconf's questions come from the head of that stream).
DEMO_STREAM_HEAD = 1000


class UsageError(SystemExit):
    """One line naming the flag, exit 2 (the project's bad-input rule)."""

    def __init__(self, message: str):
        print(f"bench_frontier: {message}", file=sys.stderr)
        super().__init__(2)


@dataclass(frozen=True)
class Question:
    prompt: str
    truth: str


def task_splits(n_tune: int, n_report: int) -> dict[str, list[Question]]:
    reported = task.heldout_set(n_report)
    taken = {p.prompt for p in task.heldout_set(max(DEMO_STREAM_HEAD, n_report))}
    tuning = []
    for p in task.problems("heldout", seed=1):
        if len(tuning) == n_tune:
            break
        if p.prompt not in taken:
            taken.add(p.prompt)
            tuning.append(p)
    return {"tuning": [Question(p.prompt, str(p.answer)) for p in tuning],
            "reported": [Question(p.prompt, str(p.answer)) for p in reported]}


def read_jsonl(path: Path, flag: str, need: int) -> list[tuple[str, str]]:
    """(question, answer) pairs through the project's one dataset loader."""
    try:
        rows = [(q.question, q.answer) for q in load_dataset(path)]
    except DatasetError as e:
        raise UsageError(f"{flag}: {e}") from None
    if len(rows) < need:
        raise UsageError(f"{flag}: {path} has {len(rows)} questions; the split needs {need}")
    return rows


def dataset_splits(args) -> dict[str, list[Question]]:
    """Reported = the first ``--questions`` of ``--dataset``; tuning = the first
    ``--tune-questions`` of ``--tune-dataset``, else the ``--dataset`` lines after the reported
    ones. Prompts go through the model's chat template when its tokenizer has one."""
    from transformers import AutoTokenizer

    n_t, n_r = args.tune_questions, args.questions
    if args.tune_dataset:
        rep = read_jsonl(Path(args.dataset), "--dataset", n_r)[:n_r]
        tune = read_jsonl(Path(args.tune_dataset), "--tune-dataset", n_t)[:n_t]
    else:
        rows = read_jsonl(Path(args.dataset), "--dataset", n_r + n_t)
        rep, tune = rows[:n_r], rows[n_r:n_r + n_t]
    path = args.model_path
    if path is not None and not Path(path).is_dir():  # a name the models registry knows
        from sglang_pr.models import resolve_model_path

        path = resolve_model_path(path)
    tok = AutoTokenizer.from_pretrained(str(path or SHIPPED_MODEL_DIR))

    def fmt(q: str) -> str:
        if not tok.chat_template:
            return q
        return tok.apply_chat_template([{"role": "user", "content": q}], tokenize=False,
                                       add_generation_prompt=True)

    return {"tuning": [Question(fmt(q), a) for q, a in tune],
            "reported": [Question(fmt(q), a) for q, a in rep]}


def pool_meta(args) -> dict:
    source = [str(args.dataset), str(args.tune_dataset)] if args.dataset else "task"
    return {"model": args.model_name, "model_path": args.model_path, "source": source,
            **{k: getattr(args, k) for k in ("temperature", "top_p", "max_new_tokens", "k",
                                             "pool")}}


def pool_dir(args) -> Path:
    if args.pool_dir:
        return Path(args.pool_dir).expanduser()
    src = Path(args.dataset).stem if args.dataset else "task"
    return POOL_ROOT / f"{args.model_name}-T{args.temperature:g}-P{args.pool}-{src}"


def check_meta(root: Path, meta: dict, resume: bool) -> None:
    """A pool dir holds one setting: refuse to mix, and to overwrite without --resume."""
    path = root / "meta.json"
    if not path.exists():
        return
    old = json.loads(path.read_text())
    flags = {"model": "--model-name", "source": "--dataset"}
    for key, value in meta.items():
        if old.get(key) != value:
            flag = flags.get(key, "--" + key.replace("_", "-"))
            raise UsageError(f"{flag}: {root} was sampled with {old.get(key)!r}, not "
                             f"{value!r} (use another --pool-dir)")
    if not resume and any(root.glob("*/*.json.gz")):
        raise UsageError(f"--resume: {root} already has questions; pass --resume to continue "
                         "(or --pool-dir for a fresh pool)")


def sampled_already(path: Path, q: Question) -> bool:
    if not path.exists():
        return False
    if read_pool_question(path)["prompt"] != q.prompt:  # the split changed under --resume
        raise UsageError(f"--resume: {path} holds another question than this split's; "
                         "use another --pool-dir")
    return True


def sample(url: str, prompt: str, args) -> tuple[list[PoolTrace], float]:
    """``--pool`` traces of one prompt in one request (SGLang prefills it once for all n)."""
    import requests

    sp = {"n": args.pool, "temperature": args.temperature, "top_p": args.top_p,
          "max_new_tokens": args.max_new_tokens,
          "custom_params": {"deepconf": {"k": args.k, "window": args.window, "threshold": None}}}
    start = time.perf_counter()
    r = requests.post(url + "/generate", json={"text": prompt, "sampling_params": sp},
                      timeout=3600)
    r.raise_for_status()
    outs = r.json()
    outs = outs if isinstance(outs, list) else [outs]
    return [PoolTrace.from_response(o) for o in outs], time.perf_counter() - start


def collect(url: str, todo: list[tuple[str, int, Question]], root: Path, args) -> None:
    start = time.perf_counter()
    for done, (split, i, q) in enumerate(todo, 1):
        traces, wall = sample(url, q.prompt, args)
        write_pool_question(root / split / f"{i:05d}.json.gz", {
            "prompt": q.prompt, "truth": q.truth, "wall_s": wall, "traces": traces})
        rate = (time.perf_counter() - start) / done
        print(f"[{done}/{len(todo)}] {split} {i}: {len(traces)} traces, "
              f"{sum(t.tokens for t in traces)} tokens, {wall:.1f} s "
              f"(eta {rate * (len(todo) - done) / 60:.1f} min)", flush=True)


def run_collect(args) -> None:
    root = pool_dir(args)
    meta = pool_meta(args)
    check_meta(root, meta, args.resume)
    splits = dataset_splits(args) if args.dataset else task_splits(args.tune_questions,
                                                                      args.questions)
    for s in SPLITS:
        (root / s).mkdir(parents=True, exist_ok=True)
    (root / "meta.json").write_text(json.dumps(meta, indent=1))
    todo = [(s, i, q) for s in SPLITS for i, q in enumerate(splits[s])
            if not sampled_already(root / s / f"{i:05d}.json.gz", q)]
    print(f"collect: {len(todo)} questions to sample into {root}", flush=True)
    if not todo:
        return
    if args.url:
        collect(args.url, todo, root, args)
        return
    from sglang_pr.server.launcher import launch

    # One OpenMP thread: on a shared CPU several processes' spinning workers slow a step 10x.
    with launch(model_path=args.model_path, timeout_s=600,
                env={"OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}) as server:
        collect(server.base_url, todo, root, args)


def load_split(root: Path, split: str) -> list[dict]:
    """The questions of a split collected so far, in order (stops at the first gap)."""
    out = []
    while (path := root / split / f"{len(out):05d}.json.gz").exists():
        out.append(read_pool_question(path))
    return out


def variant_config(variant: dict, budget: int, args, k: int) -> DeepConfConfig:
    """A variant's group config at ``budget``; a bad field is one line naming it (exit 2)."""
    if not isinstance(variant, dict) or not isinstance(variant.get("name"), str):
        raise UsageError(f"--variants: each variant needs a \"name\": {variant!r}")
    if variant.get("k", k) != k:  # replay cannot re-rank: confidences were sampled with k
        raise UsageError(f"--variants {variant['name']}.k: the pool was sampled with k={k}")
    fields = {"extractor": args.extractor, **{key: v for key, v in variant.items()
                                              if key != "name"}}
    fields.setdefault("window", args.window)
    fields["n_init"] = min(fields.get("n_init", _DEFAULTS["n_init"].default), budget)
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


def replay_split(questions: list[dict], args, k: int) -> dict:
    extract = get_extractor(args.extractor)
    pools = [QuestionPool([extract(t.text) for t in q["traces"]],
                          [t.tokens for t in q["traces"]], q["truth"]) for q in questions]
    curve = sc_curve(pools, ns=args.ns, subsets=args.subsets, seed=args.seed)
    # seconds per decode step while collecting: all --pool traces ran at once, so a question
    # took about (its longest trace) steps
    step_s = sum(q["wall_s"] for q in questions) / sum(max(t.tokens for t in q["traces"])
                                                         for q in questions)
    points = [p for v in args.variants for p in replay_points(questions, v, args, k, step_s)]
    front = build_frontier(args.model_name, curve, points,
                           sc_wall_s=curve.makespan.sum(axis=0) * step_s, seed=args.seed)
    return {**front, "step_s": step_s, "n_questions": len(questions)}


def run_replay(args) -> dict:
    root = pool_dir(args)
    if not (root / "meta.json").exists():
        raise UsageError(f"--pool-dir: no pool at {root} (run `collect` first)")
    meta = json.loads((root / "meta.json").read_text())
    args.model_name = meta["model"]
    splits = {s: load_split(root, s) for s in SPLITS}
    if not splits["reported"]:
        raise UsageError(f"--pool-dir: {root} has no reported questions yet")
    for flag, values in (("--budgets", args.budgets), ("--ns", args.ns)):
        if max(values) > meta["pool"]:
            raise UsageError(f"{flag}: {max(values)} exceeds the pool of {meta['pool']} traces")
    for v in args.variants:
        for b in args.budgets:  # every config checked before any work
            variant_config(v, b, args, meta["k"])
    start = time.perf_counter()
    result = {s: replay_split(qs, args, meta["k"]) for s, qs in splits.items() if qs}
    rep = result["reported"]
    data = {**run_metadata(), "model": meta["model"], "points": rep["points"],
            "saturation": rep["saturation"], "step_s": rep["step_s"],
            "tuning": result.get("tuning"), "pool": {**meta, "dir": str(root)},
            "settings": {k: getattr(args, k) for k in (
                "budgets", "ns", "variants", "window", "width", "replays", "subsets", "seed",
                "extractor")},
            "replay_elapsed_s": time.perf_counter() - start,
            "wall_note": "wall_s estimated: replayed decode steps x step_s (seconds per step "
                         "measured while collecting at batch = pool); summed over questions"}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(data, indent=1))
    plot(data, out.with_suffix(".png"))
    return data


def plot(data: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.8))
    sc = [p for p in data["points"] if p["method"] == "sc"]
    xs, ys = [p["tokens_per_question"] for p in sc], [p["accuracy"] for p in sc]
    dense = np.geomspace(xs[0], xs[-1], 200)  # [200]: the interpolation is linear in tokens
    ax.plot(dense, np.interp(dense, xs, ys), "-", color="tab:gray")
    ax.plot(xs, ys, "o", color="tab:gray", label="self-consistency (N)")
    for x, y, p in zip(xs, ys, sc):
        ax.annotate(str(p["budget"]), (x, y), textcoords="offset points", xytext=(3, -10),
                    fontsize=7, color="tab:gray")
    for m in sorted({p["method"] for p in data["points"]} - {"sc"}):
        pts = sorted((p for p in data["points"] if p["method"] == m),
                     key=lambda p: p["tokens_per_question"])
        line, = ax.plot([p["tokens_per_question"] for p in pts], [p["accuracy"] for p in pts],
                        "s--", label=m)
        for p in pts:
            if p["ci_vs_sc"] is not None:  # the interval drawn around SC's value there
                sc_at = p["accuracy"] - p["diff_vs_sc"]
                ax.vlines(p["tokens_per_question"], sc_at + p["ci_vs_sc"][0],
                          sc_at + p["ci_vs_sc"][1], color=line.get_color(), alpha=0.5)
    ax.set(xscale="log", xlabel="generated tokens per question (all traces)",
           ylabel="accuracy (voted answer)")
    ax.set_title(f"{data['model']}: accuracy per token; bars = SC at the same tokens "
                 "+ paired 95 % interval", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


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
    ap.add_argument("--url", help="collect through a running server (else one is started)")
    ap.add_argument("--model-path", default=None, help="model to serve (default: shipped)")
    ap.add_argument("--model-name", default=None, help="name in the results (default: "
                    "tiny-reasoner, or the model folder's name)")
    ap.add_argument("--dataset", default=None, help='JSONL of {"question", "answer"} lines '
                    "(the reported split; also the tuning one without --tune-dataset)")
    ap.add_argument("--tune-dataset", default=None, help="JSONL of the tuning split")
    ap.add_argument("--extractor", default=None, help="answer extractor (task, or last_number "
                    "with --dataset)")
    ap.add_argument("--pool-dir", default=None, help=f"pools (default: under {POOL_ROOT})")
    ap.add_argument("--resume", action="store_true", help="continue an interrupted collect")
    ap.add_argument("--ns", type=int, nargs="+", default=list(SC_NS), help="SC's N")
    ap.add_argument("--budgets", type=int, nargs="+", default=list(DEEPCONF_BUDGETS))
    ap.add_argument("--variants", type=json.loads, default=VARIANTS,
                    help='JSON list of {"name": ..., DeepConfConfig fields}')
    ap.add_argument("--window", type=int, default=SHIPPED_MODEL_WINDOW)
    ap.add_argument("--width", type=int, default=0, help="concurrent traces (0: = budget)")
    ap.add_argument("--replays", type=int, default=4, help="seeded trace orders per question")
    ap.add_argument("--subsets", type=int, default=200, help="SC subsets per question and N")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(RESULTS / "deepconf_frontier.json"))
    args = ap.parse_args(argv)
    args.model_name = args.model_name or (Path(args.model_path).name.lower() if args.model_path
                                          else "tiny-reasoner")
    args.extractor = args.extractor or ("last_number" if args.dataset else "task")
    if isinstance(args.variants, dict):  # one variant given as an object
        args.variants = [args.variants]
    if not isinstance(args.variants, list) or not args.variants:
        raise UsageError("--variants: must be a JSON list of objects")
    for flag in ("questions", "tune_questions", "pool", "replays", "subsets", "window", "k"):
        if getattr(args, flag) <= 0:
            raise UsageError(f"--{flag.replace('_', '-')}: must be > 0")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.part == "collect":
        run_collect(args)
    else:
        require_or_exit([("matplotlib", "bench", "the frontier plot")])  # before any work
        for p in run_replay(args)["points"]:
            ci = "" if p["ci_vs_sc"] is None else "vs SC [{:+.3f}, {:+.3f}]".format(*p["ci_vs_sc"])
            print(f"{p['method']:>16} {p['budget']:>4} acc {p['accuracy']:.3f} "
                  f"{p['tokens_per_question']:8.0f} tokens/q {ci}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
