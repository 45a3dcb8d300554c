"""DeepConf settings, declared once (frozen pydantic models, unknown keys rejected).

Two models, one source of defaults:

* :class:`DeepConfConfig` — a whole fork group (online DeepConf or plain self-consistency):
  warm-up size, budget, filter, consensus, concurrency, answer extraction.
* :class:`TraceSettings` — what one request carries into the scheduler (``k``, ``window``,
  ``threshold``). Its defaults are read from :class:`DeepConfConfig`, never restated.

**η (eta) is defined once, here: the percentage of traces KEPT**, ranked by confidence
(top-η %). DeepConf-low keeps the top 10 % (η = 10, the aggressive filter), DeepConf-high the top
90 % (η = 90). The online threshold is therefore the (100 − η)-th percentile of the warm-up
traces' lowest group confidences: with η = 10 only traces at least as confident as the 90th
percentile survive. (The reference code's ``CONFIDENCE_PERCENTILE`` is 100 − η.)
"""

from __future__ import annotations

import functools
import math
import regex as timed_re  # the engine user answer regexes run under (extract.py)
from typing import Annotated, Any, Literal, Optional

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_validator

from sglang_pr.validation import ConfigError, field_error, json_setting, parse_model

__all__ = ["ConfigError", "DeepConfConfig", "TraceSettings", "parse_config", "parse_trace_settings"]

Method = Literal["sc", "deepconf_low", "deepconf_high", "deepconf"]
ConfidenceKind = Literal["lowest_group", "bottom10", "tail", "mean"]
Extractor = Literal["task", "last_number", "boxed", "regex"]
WarmupVotes = Literal["kept", "all"]

# η of the two named DeepConf variants (percentage of traces kept; see the module docstring).
METHOD_ETA: dict[str, float] = {"deepconf_low": 10.0, "deepconf_high": 90.0}

# Key under ``sampling_params.custom_params`` that carries TraceSettings into the scheduler.
CUSTOM_PARAMS_KEY = "deepconf"
# meta_info keys of a DeepConf response: one confidence per output token (None where none was
# computed; filled by the scheduler), and the trace's summary (added in the main process).
META_CONFIDENCES = "deepconf_confidences"
META_SUMMARY = "deepconf"
# Finish-reason type of a trace stopped early (FinishLowConfidence in early_stop).
LOW_CONFIDENCE = "low_confidence"
# HTTP route of a whole fork group (routes.py serves it; demo and frontends call it).
GROUP_PATH = "/sglang_pr/deepconf/group"


class SamplingDefaults(BaseModel):
    """How every DeepConf/self-consistency run of the project samples unless told otherwise:
    the paper's and reference repo's T = 0.6, top-p = 0.95; ``max_new_tokens`` covers the
    shipped model's longest traces (8 steps of ~15 tokens plus the answer line)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    temperature: float = Field(0.6, ge=0.0)
    top_p: float = Field(0.95, gt=0.0, le=1.0)
    max_new_tokens: int = Field(160, ge=1)

    def as_params(self, **overrides: Any) -> dict[str, Any]:
        """SGLang ``sampling_params`` with these values, ``overrides`` on top."""
        return {**self.model_dump(), **overrides}


SAMPLING = SamplingDefaults()
# Group-confidence window for the shipped model, whose traces are ~20-100 tokens: about one
# step line ("c:72*4=288>88\n" is 15 tokens), not the paper's 2048 (demo and benchmarks).
SHIPPED_MODEL_WINDOW = 16
# The shipped model's own distribution (T 1, top-p 1): what its quality bar (pass@1, maj@32,
# sglang_pr.model.evaluate) and the demo's fork/vote program sample at, so their accuracies
# compare. It was tuned to slip at this temperature; DeepConf runs use SAMPLING instead.
SHIPPED_MODEL_TEMPERATURE = 1.0


def _positive(v: int) -> int:
    if v <= 0:
        raise ValueError("must be > 0")
    return v


# The paper's (and reference repo's) warm-up: the most traces an automatic warm-up takes.
N_INIT_MAX = 16
# A count that must be > 0 (k, window, n_init, budget, width): one rule for both models.
PositiveCount = Annotated[int, AfterValidator(_positive)]


class DeepConfConfig(BaseModel):
    """One fork group: warm-up, threshold, early stops, consensus stop, vote.

    ``method="sc"`` is plain self-consistency through the same machinery: no threshold, no
    early stop, no consensus stop unless ``consensus_stop=True``, plain majority vote.

    Defaults from measurements (issue 13): DeepConf-high with a voter floor of 4, a warm-up of
    ceil(budget / 8) traces (4 up to budget 32, 8 at 64, 16 from 128), a vote weighted by each
    voter's tail confidence (the threshold stays the lowest group's), window 16, τ 0.95. The η
    rule that results: η = max(90, 100 x 4 / warm-up) % of the warm-up clears the threshold,
    so up to budget 32 every warm-up trace that answered votes, and the threshold only cuts
    later traces. Chosen by ``benchmarks/deepconf/choose_defaults.py``
    (``benchmarks/results/deepconf_defaults.json``, 2026-12-08) over the tuning splits of both
    models' frontier runs (``deepconf_frontier.json``: the shipped model, 100 held-out
    questions of seed 1, disjoint from the demo's and the reported split, 128 traces per
    question at T 0.6; ``deepconf_frontier_smollm2-135m.json``: 100 dev questions, 32 traces
    at T 0.7; 2 replays each) by its rule: most (model, budget) points on or above SC's curve,
    then the smallest worst-model token fraction at SC's saturation, then the fewest tokens.
    Lever ``high+floor4+warmup/8+weighted+tail``: 8 of 8 points, 0.54 / 0.49 of SC's tokens at
    saturation (shipped / SmolLM2); weighted by the lowest group 0.54 / 0.58, plain vote
    0.54 / 0.95; the paper's settings (DeepConf-low, η 10, warm-up 16, no floor, lowest-group
    weights) met the goal at no point. On the reported splits (300 questions each): SmolLM2
    above SC's curve at budgets 8 / 16 / 32 (+0.038 / +0.062 / +0.039) at 0.504 of SC's tokens
    at saturation (budgets 64 / 128 not covered; lowest-group weights gave 0.483 there, not
    chosen: the tuning split decides); the shipped model on SC's curve at 8, 16 and 128
    (32: -0.013 [-0.036, +0.008]; 64: -0.009 [-0.032, +0.012]) and 1.27 of SC's tokens at
    saturation (its SC saturates by N = 8).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    method: Method = "deepconf_high"  # the frontier's choice (class docstring)
    # Percentage of traces kept (top-η %). None: the method's value (10 low, 90 high); must be
    # given for method="deepconf" and must not contradict a named method.
    eta: Optional[float] = None
    k: PositiveCount = Field(20, description="top-k log-probs averaged into a token confidence")
    # 16, not the paper's 2048 (made for traces of 10k+ tokens): on the frontier's tuning split
    # 2048 scored lower at budgets 16-64 (e.g. 0.615 vs 0.625 at 16) and 16 is the window of
    # SmolLM2's within-question AUROC 0.71 (issue 13).
    window: PositiveCount = Field(SHIPPED_MODEL_WINDOW, description="tokens per group window")
    # Warm-up traces run to completion. None: from the budget (:attr:`warmup`):
    # ceil(budget x warmup_fraction), at least the voter floor, at most N_INIT_MAX and the budget.
    n_init: Optional[PositiveCount] = None
    warmup_fraction: float = Field(0.125, gt=0.0, le=1.0,
                                   description="warm-up share of the budget when n_init is None")
    budget: PositiveCount = Field(256, description="most traces per question (reference repo: 256)")
    tau: float = Field(0.95, description="consensus: leading answer's vote share to stop")
    width: PositiveCount = Field(64, description="most traces running at once")
    consensus_stop: Optional[bool] = None  # None: on for DeepConf methods, off for "sc"
    # None (the frontier's choice, class docstring): weighted (by ``vote_confidence``) for
    # DeepConf methods, plain majority for sc; True / False: always / never.
    weighted: Optional[bool] = None
    # The summary that weighs a vote (weighted votes; summary.py defines the four) and, in the
    # offline vote, also filters. "tail" (the mean of the last window's tokens): the frontier's
    # choice (class docstring). The group's threshold and early stop always use lowest_group,
    # the online signal (the paper's and reference's vote uses it too).
    vote_confidence: ConfidenceKind = "tail"
    # Which warm-up traces vote (and count towards consensus): "kept" = only those whose lowest
    # group confidence is >= s (the reference implementation's final vote); "all" = every
    # warm-up trace that answered (so the consensus check after the warm-up sees N_init votes,
    # not the top η % alone); later traces are filtered by the early stop either way.
    warmup_votes: WarmupVotes = "kept"
    # Voter floor: the threshold is lowered (η raised) until at least this many warm-up traces
    # that gave an answer clear it, so the consensus check after the warm-up never rests on
    # ~2 votes (η 10 of 16). None: no floor. Left unset, it is cut to the warm-up; set
    # explicitly, a budget (or n_init) below it is an error naming the field.
    min_voters: Optional[PositiveCount] = 4
    extractor: Extractor = "task"
    answer_regex: Optional[str] = None  # required when extractor="regex" (group 1 = answer)

    @field_validator("eta")
    @classmethod
    def _eta_range(cls, v: Optional[float]) -> Optional[float]:
        if v is not None and not (0.0 < v <= 100.0):
            raise ValueError("must be in (0, 100] (percentage of traces kept)")
        return v

    @field_validator("answer_regex")
    @classmethod
    def _compiles(cls, v: Optional[str]) -> Optional[str]:
        if v is not None:
            try:
                timed_re.compile(v)
            except timed_re.error as e:
                raise ValueError(f"invalid regular expression ({e})") from None
        return v

    @field_validator("tau")
    @classmethod
    def _tau_range(cls, v: float) -> float:
        if not (0.0 < v <= 1.0):
            raise ValueError("must be in (0, 1]")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> "DeepConfConfig":
        floor = self.min_voters if "min_voters" in self.model_fields_set else None
        if self.method != "sc" and floor is not None:  # checked first: the budget is the cause
            if self.budget < floor:
                raise field_error("budget", f"must be >= min_voters ({floor}), the voter "
                                  f"floor; got {self.budget}")
            if self.n_init is not None and self.n_init < floor:
                raise field_error("min_voters", f"must be <= n_init ({self.n_init}): only "
                                  f"warm-up traces set the threshold; got {floor}")
        if self.method != "sc" and self.n_init is not None and self.n_init > self.budget:
            raise field_error("n_init", f"must be <= budget ({self.budget}), got {self.n_init}")
        named = METHOD_ETA.get(self.method)
        if named is not None and self.eta is not None and self.eta != named:
            raise field_error("eta", f"method {self.method!r} fixes eta={named}; got {self.eta}")
        if self.method == "deepconf" and self.eta is None:
            raise field_error("eta", "required when method='deepconf'")
        if self.extractor == "regex" and not self.answer_regex:
            raise field_error("answer_regex", "required when extractor='regex'")
        return self

    # Effective values (the None defaults resolved by method).
    @property
    def is_deepconf(self) -> bool:
        return self.method != "sc"

    @property
    def effective_eta(self) -> float:
        if self.method == "sc":
            return 100.0
        return self.eta if self.eta is not None else METHOD_ETA[self.method]

    @property
    def voter_floor(self) -> int:
        """Warm-up traces that must clear the threshold (0: no floor; at most the warm-up)."""
        if not self.is_deepconf or self.min_voters is None:
            return 0
        return min(self.min_voters, self.warmup)

    @property
    def warmup(self) -> int:
        """Warm-up traces of this group: ``n_init``, else the budget rule (field comments)."""
        if self.n_init is not None:
            return self.n_init
        share = math.ceil(self.budget * self.warmup_fraction - 1e-9)  # 0.25 x 16 is 4, not 5
        return min(self.budget, max(self.min_voters or 1, min(N_INIT_MAX, share)))

    @property
    def use_consensus_stop(self) -> bool:
        return self.is_deepconf if self.consensus_stop is None else self.consensus_stop

    @property
    def use_weighted_vote(self) -> bool:
        return self.is_deepconf if self.weighted is None else self.weighted

    def trace_settings(self, threshold: Optional[float] = None) -> "TraceSettings":
        return TraceSettings(k=self.k, window=self.window, threshold=threshold)


_DEFAULTS = DeepConfConfig.model_fields


class TraceSettings(BaseModel):
    """Per-request settings carried in ``sampling_params.custom_params["deepconf"]``.

    ``threshold`` None or −inf: track confidence, never stop early (plain sampling).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    k: PositiveCount = _DEFAULTS["k"].default
    window: PositiveCount = _DEFAULTS["window"].default
    threshold: Optional[float] = None

    @field_validator("threshold")
    @classmethod
    def _not_nan(cls, v: Optional[float]) -> Optional[float]:
        if v is not None and math.isnan(v):
            raise ValueError("must be a number or -inf, not NaN")
        return v

    @property
    def stops(self) -> bool:
        return self.threshold is not None and self.threshold > -math.inf

    def to_custom_params(self) -> dict[str, Any]:
        """JSON-safe dict for ``custom_params`` (−inf travels as None: JSON has no infinity)."""
        d: dict[str, Any] = {"k": self.k, "window": self.window}
        d["threshold"] = self.threshold if self.stops else None
        return d


class ServerLimits(BaseModel):
    """Caps a server puts on every group, set at launch (``SGLANG_PR_DEEPCONF_LIMITS``, JSON;
    ``sglang-pr serve --deepconf-limits``) and reported by ``/sglang_pr/info``.

    A group over a cap is refused with 400 naming the field, before anything runs: without a
    cap ``budget: 10**9`` would run until the client gave up.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_budget: PositiveCount = Field(1024, description="most traces one group may start")
    max_width: PositiveCount = Field(128, description="most traces of one group running at once")

    def check(self, cfg: DeepConfConfig, prefix: str) -> DeepConfConfig:
        for field, cap in (("budget", self.max_budget), ("width", self.max_width)):
            if getattr(cfg, field) > cap:
                name = f"{prefix}.{field}"
                raise ConfigError(f"{name}: must be <= {cap} (this server's max_{field}; "
                                  f"sglang-pr serve --deepconf-limits / {LIMITS_ENV})", name)
        return cfg


LIMITS_ENV = "SGLANG_PR_DEEPCONF_LIMITS"


@functools.lru_cache(maxsize=1)
def server_limits() -> ServerLimits:
    """This process's limits (read once; a bad value stops the server at start-up)."""
    return parse_model(ServerLimits, json_setting(LIMITS_ENV), LIMITS_ENV)


def parse_config(data: Any, prefix: str = "deepconf") -> DeepConfConfig:
    """Validate a group config from JSON, within :func:`server_limits`; raises
    :class:`ConfigError` naming the field."""
    return server_limits().check(parse_model(DeepConfConfig, data, prefix), prefix)


def parse_trace_settings(data: Any, prefix: str = "custom_params.deepconf") -> TraceSettings:
    """Validate per-request settings; raises :class:`ConfigError` naming the field."""
    if data is True:  # {"deepconf": true}: track with the defaults
        return TraceSettings()
    return parse_model(TraceSettings, data, prefix)


def requested(custom_params: Any) -> Any:
    """The raw DeepConf settings a request's ``custom_params`` carry; None when it did not opt
    in (no key, ``None`` or ``False``). Cheap: no validation."""
    if not isinstance(custom_params, dict):
        return None
    raw = custom_params.get(CUSTOM_PARAMS_KEY)
    return None if raw is None or raw is False else raw
