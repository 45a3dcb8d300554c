"""``sglang-pr demo``: parallel reasoning on the shipped model, end to end.

Starts ``sglang-pr serve`` on the shipped model (or ``--model-path``, a folder or a known name;
or uses ``--url``), runs an SGLang frontend program that forks each question into N branches
that share the prompt's KV in the radix cache, majority-votes their answers, prints
single-sample and voted accuracy and the tokens generated, then runs self-consistency and
DeepConf (the config's default method) side by side on the same questions (in-server fork
groups, ``--budget`` traces each; ``--no-deepconf`` skips this part), compared at equal N and
at equal tokens (SC's curve from its own traces, interpolated at DeepConf's spend, with the
paired interval; :mod:`sglang_pr.deepconf.frontier`), and stops the server. The side-by-side
is seeded (``--seed``): both methods' groups of a question share seeds, so DeepConf's branches
are SC's and a rerun repeats SC's row exactly (the frontend program is not seeded).

Questions: the shipped task's first ``--questions`` held-out ones (disjoint from the split the
DeepConf defaults were tuned on), or ``--dataset FILE.jsonl`` through the model's chat template.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass

from sglang_pr.cli import CliError
from sglang_pr.cli.side_by_side import DemoQuestion, demo_questions
from sglang_pr.cpu_platform import SEEDED_SAMPLING_ENV
from sglang_pr.deepconf.config import SAMPLING, SHIPPED_MODEL_TEMPERATURE, DeepConfConfig
from sglang_pr.deepconf.extract import EXTRACTORS, Extract, get_extractor
from sglang_pr.deepconf.vote import weighted_vote

# The fork/vote program samples at the model's own temperature, not SAMPLING's, as the
# model-quality figures do (pass@1, maj@32): its accuracies are then comparable with those. The
# DeepConf side-by-side uses SAMPLING (sglang_pr.cli.side_by_side).
VOTE_TEMPERATURE = SHIPPED_MODEL_TEMPERATURE
# The side-by-side runs the config's default method (chosen on the frontier's tuning split).
DEFAULT_METHOD = DeepConfConfig.model_fields["method"].default


def add_parser(sub) -> None:
    p = sub.add_parser("demo", help="fork-and-vote on held-out questions of the shipped model",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=8, help="branches per question (default 8)")
    p.add_argument("--questions", type=int, default=40, help="held-out questions (default 40)")
    p.add_argument("--temperature", type=float, default=None,
                   help=f"sampling temperature (default {VOTE_TEMPERATURE} for the fork/vote "
                        f"program; DeepConf's own {SAMPLING.temperature} for the side-by-side)")
    p.add_argument("--max-new-tokens", type=int, default=SAMPLING.max_new_tokens,
                   help=f"per-branch token cap (default {SAMPLING.max_new_tokens})")
    p.add_argument("--url", default=None, help="use a running server instead of starting one")
    p.add_argument("--model-path", default=None,
                   help="model to serve: a folder or a known name such as smollm2-135m "
                        "(default: the shipped model)")
    p.add_argument("--dataset", default=None, metavar="FILE.jsonl",
                   help='questions from a JSONL file of {"question", "answer"} lines (its '
                        "first --questions), through the model's chat template (default: the "
                        "shipped task's held-out questions)")
    p.add_argument("--extractor", default=None, choices=sorted(EXTRACTORS),
                   help="how an answer is read from a trace (default: task, or last_number "
                        "with --dataset)")
    p.add_argument("--port", type=int, default=None, help="port for the started server")
    p.add_argument("--deepconf", action=argparse.BooleanOptionalAction, default=True,
                   help="also run self-consistency vs the default DeepConf method side by "
                        "side (default on)")
    p.add_argument("--budget", type=int, default=32,
                   help="traces per question for the side-by-side (default 32)")
    p.add_argument("--seed", type=int, default=0,
                   help="seeds the side-by-side's groups (question q: seed x 2**20 + q x "
                        "budget; branch i adds i), so SC and DeepConf sample the same traces "
                        "and a rerun on this machine repeats (default 0; the demo's own "
                        f"server samples seeded, a --url server needs {SEEDED_SAMPLING_ENV}=1)")
    p.set_defaults(func=run)


@dataclass(frozen=True)
class QuestionResult:
    answer: int | str
    branch_answers: tuple[int | str | None, ...]
    branch_tokens: tuple[int, ...]

    @property
    def voted(self) -> int | None:
        return weighted_vote(self.branch_answers).answer


def fork_and_vote_program():
    """The SGLang frontend program: one prompt, ``n`` forked branches, one generation each."""
    import sglang as sgl

    @sgl.function
    def fork_and_vote(s, prompt, n, max_new_tokens, temperature):
        s += prompt
        branches = s.fork(n)
        branches += sgl.gen("trace", max_tokens=max_new_tokens, temperature=temperature)
        branches.join()  # gathers each branch's "trace" into s["trace"] (a list)
        s["tokens"] = [b.get_meta_info("trace")["completion_tokens"] for b in branches]

    return fork_and_vote


def run_questions(url: str, questions: list[DemoQuestion], n: int, max_new_tokens: int,
                  temperature: float, extract: Extract) -> list[QuestionResult]:
    import sglang as sgl

    program = fork_and_vote_program()
    states = program.run_batch(
        [dict(prompt=q.prompt, n=n, max_new_tokens=max_new_tokens, temperature=temperature)
         for q in questions],
        backend=sgl.RuntimeEndpoint(url),
        num_threads=min(len(questions), 8),
        progress_bar=True,
    )
    results = []
    for q, s in zip(questions, states):
        if s.error() is not None:
            raise CliError(f"program failed on {q.prompt!r}: {s.error()}")
        answers = tuple(extract(t) for t in s["trace"])
        results.append(QuestionResult(q.truth, answers, tuple(s["tokens"])))
    return results


def summarize(results: list[QuestionResult]) -> dict[str, float]:
    n_branches = sum(len(r.branch_answers) for r in results)
    single = sum(a == r.answer for r in results for a in r.branch_answers) / n_branches
    voted = sum(r.voted == r.answer for r in results) / len(results)
    tokens = sum(sum(r.branch_tokens) for r in results)
    return {"single_sample_accuracy": single, "vote_accuracy": voted, "generated_tokens": tokens}


def _validate(args: argparse.Namespace) -> None:
    for name in ("n", "questions", "max_new_tokens", "budget"):
        if getattr(args, name) <= 0:
            raise CliError(f"--{name.replace('_', '-')} must be > 0, got {getattr(args, name)}")
    if not 0 <= args.seed < 2**31:
        raise CliError(f"--seed must be in [0, 2**31), got {args.seed}")
    if args.temperature is not None and args.temperature < 0:
        raise CliError(f"--temperature must be >= 0, got {args.temperature}")


def _model_path(args: argparse.Namespace) -> str | None:
    """``--model-path`` as a folder (a known name is materialised on first use)."""
    if args.model_path is None:
        return None
    from sglang_pr.models import ModelError, resolve_model_path

    try:
        return str(resolve_model_path(args.model_path))
    except ModelError as e:
        raise CliError(f"--model-path: {e}") from None


def _questions(args: argparse.Namespace, model_path: str | None) -> list[DemoQuestion]:
    try:
        return demo_questions(args.questions, args.dataset, model_path)
    except ValueError as e:  # one line naming the flag
        raise CliError(str(e)) from None


def run(args: argparse.Namespace, extra: list[str]) -> int:
    _validate(args)
    args.extractor = args.extractor or ("last_number" if args.dataset else "task")
    model_path = _model_path(args)
    if args.url:  # the chat template comes from --model-path, else from the running server
        return _run_and_report(args, args.url, _questions(args, model_path or _served(args.url)))
    questions = _questions(args, model_path)  # bad input stops before a server starts
    from sglang_pr.server.launcher import launch

    print("starting sglang-pr serve (about 20-60 s on a CPU) ...", flush=True)
    # seeded sampling on (a CPU server samples unseeded without it; SGLang's own seeded path
    # needs its deterministic mode): the side-by-side's groups then repeat run to run
    with launch(model_path=model_path, port=args.port, env={SEEDED_SAMPLING_ENV: "1"}) as server:
        print(f"server up at {server.base_url}; log: {server.log_path}", flush=True)
        return _run_and_report(args, server.base_url, questions)


def _served(url: str) -> str | None:
    """The model folder a running server reports (for the chat template of --dataset)."""
    import requests

    try:
        return requests.get(url.rstrip("/") + "/server_info", timeout=30).json().get("model_path")
    except (requests.RequestException, ValueError):
        return None


def _run_and_report(args: argparse.Namespace, url: str, questions: list[DemoQuestion]) -> int:
    start = time.perf_counter()
    temperature = VOTE_TEMPERATURE if args.temperature is None else args.temperature
    results = run_questions(url, questions, args.n, args.max_new_tokens, temperature,
                            get_extractor(args.extractor))
    wall_s = time.perf_counter() - start
    s = summarize(results)
    source = args.dataset or "held-out"
    print(f"\n{len(results)} {source} questions x {args.n} branches "
          f"(temperature {temperature}):")
    print(f"  single-sample accuracy : {s['single_sample_accuracy']:.3f}")
    print(f"  majority-vote accuracy : {s['vote_accuracy']:.3f}")
    print(f"  tokens generated       : {s['generated_tokens']}")
    print(f"  wall time              : {wall_s:.1f} s")
    if args.deepconf:
        _side_by_side(args, url, questions)
    return 0


def _side_by_side(args: argparse.Namespace, url: str, questions: list[DemoQuestion]) -> None:
    """Self-consistency vs DeepConf, same questions, same server (sglang_pr.cli.side_by_side):
    at equal N, then at equal tokens (SC's curve from its own traces, interpolated)."""
    from sglang_pr.cli import side_by_side as deepconf_demo

    method = DEFAULT_METHOD
    print(f"\nself-consistency vs DeepConf ({method}, the default), {len(questions)} questions, "
          f"budget {args.budget} traces (in-server fork groups, seed {args.seed}: both methods "
          "sample the same traces) ...", flush=True)
    try:
        rows = deepconf_demo.side_by_side(
            url, budget=args.budget, questions=questions, methods=("sc", method),
            extra={"extractor": args.extractor}, seed=args.seed,
            sampling={"max_new_tokens": args.max_new_tokens,
                      **({} if args.temperature is None else {"temperature": args.temperature})})
    except (RuntimeError, OSError) as e:  # e.g. a --url server without the DeepConf plugin
        raise CliError(f"DeepConf side-by-side failed: {e}") from None
    print(deepconf_demo.format_table(rows))
    print(deepconf_demo.format_difference(rows))
    print(deepconf_demo.format_equal_tokens(rows))
