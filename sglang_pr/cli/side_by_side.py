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
from sglang_pr.deepconf.config import SAMPLING, SHIPPED_MODEL_WINDOW, DeepConfConfig
from sglang_pr.model import task

_N_INIT = DeepConfConfig.model_fields["n_init"].default


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

    def add(self, response: dict, elapsed_s: float, truth: str) -> None:
        """Count one group response (``POST /sglang_pr/deepconf/group``) against ``truth``."""
        t = response["totals"]
        self.hits.append(response["answer"] == truth)
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
        d.pop("answers")
        d.pop("hits")
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


def side_by_side(url: str, n_questions: int = 20, budget: int = 16,
                 methods: Sequence[str] = ("sc", "deepconf_low"),
                 window: int = SHIPPED_MODEL_WINDOW,
                 sampling: Optional[dict] = None, extra: Optional[dict] = None,
                 progress: Optional[Callable[[int, int], None]] = None) -> list[MethodStats]:
    """Run each method on the same held-out questions; one MethodStats per method.

    ``sampling`` overrides :data:`~sglang_pr.deepconf.config.SAMPLING`; ``width`` is the budget
    (the whole group at once) and the warm-up is DeepConf's, cut to the budget."""
    sampling = SAMPLING.as_params(**(sampling or {}))
    problems = task.heldout_set(n_questions)
    stats = {m: MethodStats(m, budget) for m in methods}
    for qi, p in enumerate(problems):
        for m in methods:
            cfg = {"method": m, "budget": budget, "window": window, "width": budget,
                   "n_init": min(_N_INIT, budget), **(extra or {})}
            stats[m].add(*run_group(url, p.prompt, cfg, sampling), str(p.answer))
        if progress is not None:
            progress(qi + 1, len(problems))
    return list(stats.values())


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
        lines.append(f"{s.method} - {base.method} accuracy: {s.accuracy - base.accuracy:+.3f} "
                     f"(paired 95 % interval {lo:+.3f} .. {hi:+.3f} over {s.n_questions} "
                     "questions; more questions narrow it)")
    return "\n".join(lines)
