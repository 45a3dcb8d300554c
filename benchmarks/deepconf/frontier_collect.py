"""The sampling side of ``bench_frontier.py``: the question splits, one pool file per question,
``collect`` (several questions in flight, resumable), and reading a split back."""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from sglang_pr.data import DatasetError, load_dataset
from sglang_pr.data.prompts import format_prompts
from sglang_pr.deepconf.replay import PoolTrace, read_pool_question, write_pool_question
from sglang_pr.model import SHIPPED_MODEL_DIR, task

POOL_ROOT = Path.home() / ".cache" / "sglang_pr" / "frontier"
SPLITS = ("tuning", "reported")
# The tuning split avoids the first this-many held-out questions of seed 0 (the demo's and
# bench_deepconf's questions come from the head of that stream).
DEMO_STREAM_HEAD = 1000



class UsageError(SystemExit):
    """One line naming the flag, exit 2 (the project's bad-input rule)."""

    def __init__(self, message: str):
        print(f"bench_frontier: {message}", file=sys.stderr)
        super().__init__(2)


class ServerLost(SystemExit):
    """The server stopped answering mid-run (e.g. its watchdog killed a stalled step): one
    line, exit 1; every question finished before (and those in flight that finish) is kept."""

    def __init__(self, error: Exception):
        print(f"bench_frontier: the server stopped answering ({type(error).__name__}: "
              f"{error}); finished questions are written, `collect --resume` continues",
              file=sys.stderr)
        super().__init__(1)


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
    n_t, n_r = args.tune_questions, args.questions
    if args.tune_dataset:
        rep = read_jsonl(Path(args.dataset), "--dataset", n_r)[:n_r]
        tune = read_jsonl(Path(args.tune_dataset), "--tune-dataset", n_t)[:n_t]
    else:
        rows = read_jsonl(Path(args.dataset), "--dataset", n_r + n_t)
        rep, tune = rows[:n_r], rows[n_r:n_r + n_t]
    path = args.model_path
    if path is not None and not Path(path).is_dir():  # a name the models registry knows
        from sglang_pr.models import ModelError, resolve_model_path

        try:
            path = resolve_model_path(path)
        except ModelError as e:
            raise UsageError(f"--model-path: {e}") from None
    model = str(path or SHIPPED_MODEL_DIR)  # its chat template, when it has one
    return {"tuning": [Question(p, a) for p, (_, a) in
                       zip(format_prompts(model, [q for q, _ in tune]), tune)],
            "reported": [Question(p, a) for p, (_, a) in
                         zip(format_prompts(model, [q for q, _ in rep]), rep)]}


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


def sample(url: str, prompt: str, args, n: int) -> tuple[list[PoolTrace], float]:
    """``n`` traces of one prompt in one request (SGLang prefills it once for all n)."""
    import requests

    sp = {"n": n, "temperature": args.temperature, "top_p": args.top_p,
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
    """Sample every question of ``todo``, ``--concurrency`` at a time; each is written as soon
    as it is done (``--resume`` skips the written ones, whatever order they finished in)."""
    from concurrent.futures import ThreadPoolExecutor, as_completed

    import requests

    start = time.perf_counter()

    def one(item):
        split, i, q = item
        base = grown_from(args, split, i, q)
        have = base["traces"] if base else []
        traces, wall = sample(url, q.prompt, args, args.pool - len(have))
        # wall_s: this question's latency with --concurrency questions in flight (batch =
        # concurrency x request size), what replay's seconds-per-step estimate is made from;
        # requests: one entry per /generate (a grown question has two)
        requests = [*(requests_of(base) if base else []), request_entry(traces, wall)]
        write_pool_question(root / split / f"{i:05d}.json.gz", {
            "prompt": q.prompt, "truth": q.truth, "traces": [*have, *traces],
            "wall_s": sum(r["wall_s"] for r in requests), "requests": requests,
            "concurrency": args.concurrency})
        return split, i, traces, wall

    pool = ThreadPoolExecutor(args.concurrency)
    try:
        futures = [pool.submit(one, item) for item in todo]
        for done, f in enumerate(as_completed(futures), 1):
            try:
                split, i, traces, wall = f.result()
            except requests.RequestException as e:  # not a bug of ours: no traceback
                raise ServerLost(e) from None
            rate = (time.perf_counter() - start) / done
            print(f"[{done}/{len(todo)}] {split} {i}: {len(traces)} traces, "
                  f"{sum(t.tokens for t in traces)} tokens, {wall:.1f} s "
                  f"(eta {rate * (len(todo) - done) / 60:.1f} min)", flush=True)
    finally:  # an error or Ctrl-C: questions not started are dropped, running ones finish
        pool.shutdown(wait=True, cancel_futures=True)


def request_entry(traces: list[PoolTrace], wall: float) -> dict:
    """One /generate of a question: its size, latency and decode steps (its longest trace)."""
    return {"n": len(traces), "wall_s": wall, "steps": max(t.tokens for t in traces)}


def requests_of(q: dict) -> list[dict]:
    """A pool question's /generate requests (one, unless it was grown with --grow-from)."""
    return q.get("requests") or [request_entry(q["traces"], q["wall_s"])]


def check_grow(args, meta: dict) -> None:
    """``--grow-from``: a pool of the same questions and settings with fewer traces."""
    if not args.grow_from:
        return
    base = Path(args.grow_from).expanduser()
    path = base / "meta.json"
    if not path.exists():
        raise UsageError(f"--grow-from: {base} is not a pool (no meta.json)")
    old = json.loads(path.read_text())
    for key, value in meta.items():
        if key != "pool" and old.get(key) != value:
            raise UsageError(f"--grow-from: {base} was sampled with {key} {old.get(key)!r}, "
                             f"not {value!r}")
    if not 0 < old["pool"] < args.pool:
        raise UsageError(f"--grow-from: {base} holds {old['pool']} traces a question; "
                         f"--pool {args.pool} must be larger")
    if base.resolve() == pool_dir(args).resolve():
        raise UsageError("--grow-from: must be another directory than --pool-dir")


def grown_from(args, split: str, i: int, q: Question) -> dict | None:
    """The ``--grow-from`` pool's record of this question (None without the flag)."""
    if not args.grow_from:
        return None
    path = Path(args.grow_from).expanduser() / split / f"{i:05d}.json.gz"
    if not path.exists():
        raise UsageError(f"--grow-from: {path} is missing (finish that pool first)")
    base = read_pool_question(path)
    if base["prompt"] != q.prompt:
        raise UsageError(f"--grow-from: {path} holds another question than this split's")
    return base


def run_collect(args) -> None:
    root = pool_dir(args)
    meta = pool_meta(args)
    check_meta(root, meta, args.resume)
    check_grow(args, meta)
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
