"""``sglang-pr demo``: parallel reasoning on the shipped model, end to end.

Starts ``sglang-pr serve`` on the shipped model (or uses ``--url``), runs an SGLang frontend
program that forks each held-out question into N branches that share the prompt's KV in the
radix cache, majority-votes their answers, prints single-sample and voted accuracy and the
tokens generated, then runs self-consistency and DeepConf-low side by side on the same questions
(in-server fork groups, ``--budget`` traces each; ``--no-deepconf`` skips this part), and stops
the server.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass

from sglang_pr.cli import CliError
from sglang_pr.deepconf.config import SAMPLING, SHIPPED_MODEL_TEMPERATURE
from sglang_pr.deepconf.vote import weighted_vote
from sglang_pr.model import task

# The fork/vote program samples at the model's own temperature, not SAMPLING's, as the
# model-quality figures do (pass@1, maj@32): its accuracies are then comparable with those. The
# DeepConf side-by-side uses SAMPLING (sglang_pr.cli.side_by_side).
VOTE_TEMPERATURE = SHIPPED_MODEL_TEMPERATURE


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
    p.add_argument("--model-path", default=None, help="model to serve (default: shipped model)")
    p.add_argument("--port", type=int, default=None, help="port for the started server")
    p.add_argument("--deepconf", action=argparse.BooleanOptionalAction, default=True,
                   help="also run self-consistency vs DeepConf-low side by side (default on)")
    p.add_argument("--budget", type=int, default=32,
                   help="traces per question for the side-by-side (default 32)")
    p.set_defaults(func=run)


@dataclass(frozen=True)
class QuestionResult:
    answer: int
    branch_answers: tuple[int | None, ...]
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


def run_questions(url: str, problems: list[task.Problem], n: int, max_new_tokens: int,
                  temperature: float) -> list[QuestionResult]:
    import sglang as sgl

    program = fork_and_vote_program()
    states = program.run_batch(
        [dict(prompt=p.prompt, n=n, max_new_tokens=max_new_tokens, temperature=temperature)
         for p in problems],
        backend=sgl.RuntimeEndpoint(url),
        num_threads=min(len(problems), 8),
        progress_bar=True,
    )
    results = []
    for p, s in zip(problems, states):
        if s.error() is not None:
            raise CliError(f"program failed on {p.prompt!r}: {s.error()}")
        answers = tuple(task.extract_answer(t) for t in s["trace"])
        results.append(QuestionResult(p.answer, answers, tuple(s["tokens"])))
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
    if args.temperature is not None and args.temperature < 0:
        raise CliError(f"--temperature must be >= 0, got {args.temperature}")


def run(args: argparse.Namespace, extra: list[str]) -> int:
    _validate(args)
    problems = task.heldout_set(args.questions)
    if args.url:
        return _run_and_report(args, args.url, problems)
    from sglang_pr.server.launcher import launch

    print("starting sglang-pr serve (about 20-60 s on a CPU) ...", flush=True)
    with launch(model_path=args.model_path, port=args.port) as server:
        print(f"server up at {server.base_url}; log: {server.log_path}", flush=True)
        return _run_and_report(args, server.base_url, problems)


def _run_and_report(args: argparse.Namespace, url: str, problems: list[task.Problem]) -> int:
    start = time.perf_counter()
    temperature = VOTE_TEMPERATURE if args.temperature is None else args.temperature
    results = run_questions(url, problems, args.n, args.max_new_tokens, temperature)
    wall_s = time.perf_counter() - start
    s = summarize(results)
    print(f"\n{len(results)} held-out questions x {args.n} branches "
          f"(temperature {temperature}):")
    print(f"  single-sample accuracy : {s['single_sample_accuracy']:.3f}")
    print(f"  majority-vote accuracy : {s['vote_accuracy']:.3f}")
    print(f"  tokens generated       : {s['generated_tokens']}")
    print(f"  wall time              : {wall_s:.1f} s")
    if args.deepconf:
        _side_by_side(args, url, len(problems))
    return 0


def _side_by_side(args: argparse.Namespace, url: str, n_questions: int) -> None:
    """Self-consistency vs DeepConf-low, same questions, same server (sglang_pr.cli.side_by_side)."""
    from sglang_pr.cli import side_by_side as deepconf_demo

    print(f"\nself-consistency vs DeepConf-low, {n_questions} questions, budget {args.budget} "
          "traces (in-server fork groups) ...", flush=True)
    try:
        rows = deepconf_demo.side_by_side(
            url, n_questions=n_questions, budget=args.budget,
            sampling={"max_new_tokens": args.max_new_tokens,
                      **({} if args.temperature is None else {"temperature": args.temperature})})
    except (RuntimeError, OSError) as e:  # e.g. a --url server without the DeepConf plugin
        raise CliError(f"DeepConf side-by-side failed: {e}") from None
    print(deepconf_demo.format_table(rows))
    print(deepconf_demo.format_difference(rows))
