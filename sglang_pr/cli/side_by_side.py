"""Self-consistency vs DeepConf side by side on held-out questions (for ``sglang-pr demo``).

    from sglang_pr.cli.side_by_side import side_by_side, format_table
    rows = side_by_side(url, n_questions=20, budget=16)
    print(format_table(rows))

Both methods go through the same running server (``POST /sglang_pr/deepconf/group``), question
by question and method by method interleaved, so load on the machine hits both alike.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Callable, Optional, Sequence

import numpy as np

from sglang_pr.cli.client import post_group
from sglang_pr.deepconf.config import SAMPLING, SHIPPED_MODEL_WINDOW
from sglang_pr.deepconf.frontier import PairedDiff, QuestionPool, paired_ci_vs_sc, sc_curve
from sglang_pr.model import SHIPPED_MODEL_DIR, task

@dataclass
class MethodStats:
    method: str
    budget: int
    generated_tokens: int = 0
    wall_s: float = 0.0  # client-side, summed over questions
    server_wall_s: float = 0.0  # the server's own group time (``totals.wall_s``)
    traces: int = 0
    stopped_early: int = 0
    aborted: int = 0
    consensus: int = 0
    answers: list = field(default_factory=list)
    hits: list = field(default_factory=list)  # per question: answer == truth
    tokens: list = field(default_factory=list)  # per question: generated tokens
    pools: list = field(default_factory=list)  # per question: QuestionPool of its traces

    def add(self, response: dict, elapsed_s: float, truth: str) -> None:
        """Count one group response (``POST /sglang_pr/deepconf/group``) against ``truth``."""
        t = response["totals"]
        self.hits.append(response["answer"] == truth)
        self.tokens.append(t["generated_tokens"])
        traces = response.get("traces") or []
        if traces:  # an SC group's traces are a pool: SC's curve at every n <= budget
            self.pools.append(QuestionPool([r.get("answer") for r in traces],
                                           [int(r.get("tokens") or 0) for r in traces], truth))
        self.generated_tokens += t["generated_tokens"]
        self.wall_s += elapsed_s
        self.server_wall_s += t["wall_s"]
        self.traces += t["traces_started"]
        self.stopped_early += t["stopped_early"]
        self.aborted += t["aborted"]
        self.consensus += bool(t["consensus_reached"])
        self.answers.append(response["answer"])

    @property
    def n_questions(self) -> int:
        return len(self.hits)

    @property
    def correct(self) -> int:
        return sum(self.hits)

    @property
    def accuracy(self) -> float:
        return self.correct / self.n_questions if self.n_questions else 0.0

    def row(self) -> dict:
        d = asdict(self)
        for key in ("answers", "hits", "tokens", "pools"):
            d.pop(key)
        d.update(n_questions=self.n_questions, correct=self.correct, accuracy=self.accuracy,
                 traces_per_question=self.traces / max(1, self.n_questions),
                 tokens_per_question=self.generated_tokens / max(1, self.n_questions))
        return d


def run_group(url: str, prompt: str, deepconf: dict, sampling: dict,
              timeout_s: float = 900.0) -> tuple[dict, float]:
    """One group through the server; returns (response JSON, client-side seconds)."""
    start = time.perf_counter()
    d = post_group(url, prompt, deepconf, sampling, timeout_s=timeout_s)
    return d, time.perf_counter() - start


@dataclass(frozen=True)
class DemoQuestion:
    prompt: str  # what the server is sent (already in the model's format)
    truth: str


def demo_questions(n: int, dataset: Optional[str] = None,
                   model_path: Optional[str] = None) -> list[DemoQuestion]:
    """The first ``n`` held-out questions of the shipped task (the frontier's tuning split
    skips the first 1000, so these never tuned a default), or the first ``n`` lines of the
    JSONL ``dataset`` through ``model_path``'s chat template. Bad input: ValueError of one
    line naming the flag."""
    if dataset is None:
        return [DemoQuestion(p.prompt, str(p.answer)) for p in task.heldout_set(n)]
    from sglang_pr.data import DatasetError, load_dataset
    from sglang_pr.data.prompts import format_prompts

    try:
        rows = load_dataset(dataset)
    except DatasetError as e:
        raise ValueError(f"--dataset: {e}") from None
    if len(rows) < n:
        raise ValueError(f"--questions: {dataset} has {len(rows)} questions; asked for {n}")
    rows = rows[:n]
    prompts = format_prompts(str(model_path or SHIPPED_MODEL_DIR), [r.question for r in rows])
    return [DemoQuestion(p, r.answer) for p, r in zip(prompts, rows)]


def side_by_side(url: str, n_questions: int = 20, budget: int = 16,
                 methods: Sequence[str] = ("sc", "deepconf_low"),
                 window: int = SHIPPED_MODEL_WINDOW,
                 sampling: Optional[dict] = None, extra: Optional[dict] = None,
                 progress: Optional[Callable[[int, int], None]] = None,
                 questions: Optional[Sequence[DemoQuestion]] = None,
                 seed: Optional[int] = None) -> list[MethodStats]:
    """Run each method on the same questions (``questions``, else the first ``n_questions``
    held-out ones); one MethodStats per method.

    ``sampling`` overrides :data:`~sglang_pr.deepconf.config.SAMPLING`; ``width`` is the budget
    (the whole group at once) and the warm-up is the config's rule for the budget; ``extra``
    (e.g. ``{"extractor": "last_number"}``) goes into every group's config.

    ``seed``: question q's groups get ``sampling_seed`` = seed x 2**20 + q x budget (the group
    route seeds branch i with that + i), the same for every method: their branch i samples the
    same trace (common random numbers), so the paired difference is the methods' own and a
    rerun repeats on a server with seeded sampling (``SGLANG_PR_SEEDED_SAMPLING=1``)."""
    sampling = SAMPLING.as_params(**(sampling or {}))
    questions = list(questions) if questions is not None else demo_questions(n_questions)
    stats = {m: MethodStats(m, budget) for m in methods}
    for qi, q in enumerate(questions):
        sp = sampling if seed is None else {**sampling,
                                            "sampling_seed": seed * 2**20 + qi * budget}
        for m in methods:
            cfg = {"method": m, "budget": budget, "window": window, "width": budget,
                   **(extra or {})}  # the warm-up: the config's rule for this budget
            stats[m].add(*run_group(url, q.prompt, cfg, sp), q.truth)
        if progress is not None:
            progress(qi + 1, len(questions))
    return list(stats.values())


def equal_tokens(sc: MethodStats, other: MethodStats, seed: int = 0) -> Optional[PairedDiff]:
    """``other`` against SC at the same mean tokens per question: SC's curve at n = 1, 2, 4,
    ... <= its budget from the traces its own groups sampled (no extra sampling), interpolated
    and paired as :mod:`sglang_pr.deepconf.frontier` does it. None when SC's groups carried no
    traces or ``other`` spent outside SC's measured range."""
    if len(sc.pools) != sc.n_questions or not sc.pools:
        return None
    smallest = min(len(p.answers) for p in sc.pools)
    ns = [n for n in (2 ** i for i in range(12)) if n <= smallest]
    if ns[-1] != smallest:
        ns.append(smallest)
    curve = sc_curve(sc.pools, ns=ns, subsets=100, seed=seed)
    return paired_ci_vs_sc([float(h) for h in other.hits], other.tokens, curve, seed=seed)


def format_equal_tokens(stats: Sequence[MethodStats]) -> str:
    """One line per method after the first (SC): accuracy minus SC's at the same tokens."""
    base, lines = stats[0], []
    for s in stats[1:]:
        d = equal_tokens(base, s)
        tokens = s.generated_tokens / max(1, s.n_questions)
        if d is None:
            lines.append(f"{s.method} at {tokens:.0f} tokens/question: outside SC's measured "
                         "range (no equal-token comparison)")
            continue
        lines.append(f"{s.method} - sc at equal tokens ({tokens:.0f} tokens/question = SC at "
                     f"N={d.sc_n:.1f}, accuracy {d.sc_accuracy:.3f}): {d.diff:+.3f} (paired "
                     f"95 % interval {d.lo:+.3f} .. {d.hi:+.3f})")
    return "\n".join(lines)


def format_table(stats: Sequence[MethodStats]) -> str:
    base = stats[0]
    lines = [f"{'method':<15}{'N':>5}{'accuracy':>10}{'tokens':>10}{'vs ' + base.method:>10}"
             f"{'wall s':>9}{'traces/q':>10}{'early':>7}{'consensus':>11}"]
    for s in stats:
        ratio = s.generated_tokens / base.generated_tokens if base.generated_tokens else 0.0
        lines.append(f"{s.method:<15}{s.budget:>5}{s.accuracy:>10.3f}{s.generated_tokens:>10d}"
                     f"{ratio:>10.2f}{s.wall_s:>9.1f}{s.traces / max(1, s.n_questions):>10.1f}"
                     f"{s.stopped_early:>7d}{s.consensus:>11d}")
    return "\n".join(lines)


def paired_diff_ci(a: Sequence[bool], b: Sequence[bool], reps: int = 2000,
                   seed: int = 0) -> tuple[float, float]:
    """95 % paired-bootstrap interval, over questions, of accuracy(a) - accuracy(b).

    Why: on tens of questions the difference moves by several questions between question sets;
    the interval says whether a gap is more than that.
    """
    if len(a) != len(b) or not a:
        raise ValueError(f"paired_diff_ci needs two equally long, non-empty lists of per-question "
                         f"results (got {len(a)} and {len(b)})")
    d = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)  # [Q] in {-1, 0, 1}
    idx = np.random.default_rng(seed).integers(0, len(d), size=(reps, len(d)))  # [reps, Q]
    means = d[idx].mean(axis=1)
    return float(np.quantile(means, 0.025)), float(np.quantile(means, 0.975))


def format_difference(stats: Sequence[MethodStats]) -> str:
    """One line per method after the first: its accuracy minus the first's, with the interval."""
    base, lines = stats[0], []
    for s in stats[1:]:
        lo, hi = paired_diff_ci(s.hits, base.hits)
        lines.append(f"{s.method} - {base.method} accuracy at equal N ({s.budget} traces): "
                     f"{s.accuracy - base.accuracy:+.3f} (paired 95 % interval {lo:+.3f} .. "
                     f"{hi:+.3f} over {s.n_questions} questions; more questions narrow it)")
    return "\n".join(lines)
