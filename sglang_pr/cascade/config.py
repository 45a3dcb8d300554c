"""Cascade backend settings, declared once.

Read in SGLang's scheduler process (where the attention backend is built) from the environment
variable ``SGLANG_PR_CASCADE``: a JSON object with any of the fields below, e.g.
``SGLANG_PR_CASCADE='{"min_prefix_tokens": 128}'``. Unknown keys and bad values stop the server
at start-up with an error naming the field.
"""

from __future__ import annotations

from typing import Literal, Optional

from pydantic import BaseModel, ConfigDict, Field

from sglang_pr.validation import json_setting, parse_model

ENV_VAR = "SGLANG_PR_CASCADE"
BACKEND_NAME = "cascade"


class CascadeConfig(BaseModel):
    """Cost rule and kernel choice for grouped decode (and extends over a cached prefix).

    Cost rule (applied per shared segment, every decode batch): a span of KV slots shared by a
    set of running requests is attended once for the whole set only if the set has at least
    ``min_group_size`` requests and the span is at least ``min_prefix_tokens`` long. Otherwise
    those tokens stay in the requests' own (flat) attention. Why: cascade replaces ``n`` reads
    of a span of ``P`` tokens by one read plus a fixed per-group cost (one more kernel launch /
    a few more torch ops and an LSE merge); that pays once ``(n - 1) * P`` tokens of reads
    outweigh it. ``benchmarks/cascade`` measures the crossover; the defaults sit above it.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    min_prefix_tokens: int = Field(
        64, ge=1, description="shortest shared span attended once per group (tokens)"
    )
    min_group_size: int = Field(
        2, ge=2, description="fewest requests sharing a span for it to be attended once"
    )
    kernel: Literal["auto", "torch", "triton"] = Field(
        "auto", description="auto: Triton on CUDA, pure torch elsewhere"
    )
    extend: bool = Field(
        True,
        description="extends (prefill over a cached prefix) by the backend's own path: the new "
        "tokens only, a shared prefix once per group; false = SGLang torch_native's extend, "
        "which queries every cached position again",
    )
    stats_path: Optional[str] = Field(
        None, description="if set, the scheduler rewrites this JSON file with counters (tests)"
    )


def load_config(environ: Optional[dict] = None) -> CascadeConfig:
    """Parse ``SGLANG_PR_CASCADE`` (JSON object); defaults when unset.

    Raises:
        ConfigError (a ValueError): naming the offending field, or saying the JSON does not parse.
    """
    return parse_model(CascadeConfig, json_setting(ENV_VAR, environ), ENV_VAR)
