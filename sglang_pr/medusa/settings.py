"""Resolve the serving-time ``MedusaConfig`` from its three sources (one rule, two callers).

Precedence, lowest first:
1. ``MedusaConfig`` defaults (``config.py``);
2. the heads directory (``--speculative-draft-model-path``): its head count, layer count and,
   when it carries one, the tree and top-k it was calibrated with;
3. ``SGLANG_PR_MEDUSA``: a JSON object of ``MedusaConfig`` fields, e.g.
   ``{"tree": [[0], [0, 0], [1]], "typical_epsilon": 0.05}`` (or ``@/path/to/file.json``);
   unknown keys or bad values raise, naming the field;
4. ``--speculative-num-draft-tokens N``: keep the first N - 1 tree paths (N counts the root).

The main process resolves it while SGLang resolves its server args (so a bad heads file fails
there, before anything is served); the scheduler's worker resolves it again from the same
inputs and gets the same tree.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Optional

from pydantic import ValidationError

from sglang_pr.medusa.checkpoint import MedusaHeadsError, read_heads_config
from sglang_pr.medusa.config import MedusaConfig

ENV_VAR = "SGLANG_PR_MEDUSA"


class MedusaSettingsError(ValueError):
    """A bad MEDUSA setting; the message names the source and the field."""


def _env_overrides(env: Optional[str]) -> dict[str, Any]:
    if not env:
        return {}
    text = env
    if env.startswith("@"):
        try:
            text = Path(env[1:]).read_text()
        except OSError as e:
            raise MedusaSettingsError(f"{ENV_VAR}: cannot read {env[1:]} ({e.strerror})") from None
    try:
        data = json.loads(text)
    except ValueError as e:
        raise MedusaSettingsError(f"{ENV_VAR}: not valid JSON ({e})") from None
    if not isinstance(data, dict):
        raise MedusaSettingsError(f"{ENV_VAR}: expected a JSON object of MedusaConfig fields")
    return data


def resolve_medusa_config(
    heads_path: Optional[str],
    num_draft_tokens: Optional[int] = None,
    env: Optional[str] = None,
) -> MedusaConfig:
    """The effective config; ``env`` defaults to ``os.environ[SGLANG_PR_MEDUSA]``."""
    if not heads_path:
        raise MedusaSettingsError(
            "MEDUSA needs --speculative-draft-model-path <heads directory> "
            "(e.g. the shipped sglang_pr/assets/tiny-reasoner-medusa)"
        )
    try:
        cfg = read_heads_config(heads_path)
    except MedusaHeadsError as e:
        raise MedusaSettingsError(str(e)) from None
    fields: dict[str, Any] = {
        "num_heads": int(cfg["medusa_num_heads"]),
        "num_layers": int(cfg.get("medusa_num_layers", 1)),
    }
    ours = cfg.get("sglang_pr") or {}
    if ours.get("top_k") is not None:
        fields["top_k"] = int(ours["top_k"])
    if ours.get("tree"):
        fields["tree"] = ours["tree"]
    elif fields["num_heads"] < max(len(p) for p in MedusaConfig.model_fields["tree"].default):
        # The default tree is 5 deep; heads without a tree of their own and fewer heads get
        # the default cut to their depth (a depth cut of a tree is still a tree).
        default = MedusaConfig.model_fields["tree"].default
        fields["tree"] = [p for p in default if len(p) <= fields["num_heads"]]
    fields.update(_env_overrides(os.environ.get(ENV_VAR) if env is None else env))
    if num_draft_tokens is not None and "max_tree_nodes" not in fields:
        fields["max_tree_nodes"] = int(num_draft_tokens)
    try:
        return MedusaConfig(**fields)
    except ValidationError as e:
        first = e.errors()[0]
        loc = ".".join(str(x) for x in first["loc"]) or "config"
        raise MedusaSettingsError(f"MEDUSA setting '{loc}': {first['msg']}") from None
