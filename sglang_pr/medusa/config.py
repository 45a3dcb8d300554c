"""Medusa defaults, declared once (one frozen pydantic config per concern).

``MedusaConfig``   the decoding side: heads, tree, acceptance thresholds.
``MedusaTrainConfig`` the ``sglang-pr medusa train`` recipe (Medusa-1, self-distillation).
``resolve_medusa_config`` the serving-time config from defaults, heads dir, env and flags.
``MedusaHeadsConfig`` what SGLang's AutoConfig sees for a heads directory.

The typical-acceptance thresholds follow the Medusa paper's names: a candidate token x is
accepted when p(x) > min(ε, δ·exp(−H(p))), with ε = 0.09 (``typical_epsilon``) and
δ = 0.3 (``typical_delta``). The reference implementation calls them ``posterior_threshold``
and ``posterior_alpha`` and swaps them between layers; here they are named once.
"""

from __future__ import annotations

from typing import Any, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from transformers import PretrainedConfig

from sglang_pr.deepconf.config import SAMPLING
from sglang_pr.medusa.checkpoint import MedusaHeadsError, read_heads_config
from sglang_pr.validation import ConfigError, json_setting, parse_model

ALGORITHM = "MEDUSA"  # the --speculative-algorithm name
BACKEND_NAME = "medusa_tree"  # attention backend (the cascade subsystem registers its own)
ENV_VAR = "SGLANG_PR_MEDUSA"

Path_ = tuple[int, ...]

# The default sparse tree, as data: each entry is a path of per-head ranks (rank 0 = a head's
# top-1 token). Entry (0, 1) means "head 1's top-1 token, then head 2's second-best token".
# The list is in priority order, so every prefix of it is itself a valid tree (a node's parent
# always comes earlier); --speculative-num-draft-tokens N keeps the first N - 1 entries.
# It was produced by ``tree.build_sparse_tree`` (greedy on expected accepted length) from a
# prior of per-head accuracies: head k's top-1 is right with a_k = 0.9, 0.8, 0.7, 0.6, 0.5
# (the shipped arithmetic model's text is very regular) and its rank r >= 1 token with
# (1 - a_k) * 0.5^r; 31 paths + the root = 32 verify tokens per request.
# Shipped heads carry their own tree, calibrated on held-out data (see ``train.py``).
DEFAULT_TREE: tuple[Path_, ...] = (
    (0,), (0, 0), (0, 0, 0), (0, 0, 0, 0), (0, 0, 0, 0, 0), (0, 0, 1), (0, 0, 0, 1), (0, 1),
    (0, 0, 0, 0, 1), (0, 0, 1, 0), (0, 1, 0), (0, 0, 2), (0, 0, 0, 1, 0), (0, 0, 0, 2), (1,),
    (0, 2), (1, 0), (0, 0, 0, 0, 2), (0, 1, 0, 0), (0, 0, 1, 0, 0), (0, 0, 2, 0), (0, 2, 0),
    (1, 0, 0), (0, 0, 3), (0, 0, 0, 1, 1), (0, 0, 0, 2, 0), (0, 0, 0, 3), (2,), (0, 3),
    (0, 0, 1, 1), (2, 0),
)


def _check_tree(paths: tuple[Path_, ...], num_heads: int, top_k: int) -> None:
    """Raise ValueError naming the first bad path (the messages end up in HTTP 400s/startup)."""
    if not paths:
        raise ValueError("tree must contain at least one path")
    seen: set[Path_] = set()
    for i, p in enumerate(paths):
        if len(p) == 0:
            raise ValueError(f"tree path #{i} is empty")
        if len(p) > num_heads:
            raise ValueError(f"tree path #{i} {list(p)} is deeper than num_heads={num_heads}")
        if any(r < 0 or r >= top_k for r in p):
            raise ValueError(f"tree path #{i} {list(p)} has a rank outside [0, top_k={top_k})")
        if p in seen:
            raise ValueError(f"tree path #{i} {list(p)} appears twice")
        if len(p) > 1 and p[:-1] not in seen:
            raise ValueError(
                f"tree path #{i} {list(p)}: its parent {list(p[:-1])} must come earlier"
            )
        seen.add(p)


class MedusaConfig(BaseModel):
    """How MEDUSA drafts and verifies (server side)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    num_heads: int = Field(5, ge=1, le=16, description="K: head k predicts token t+k+1")
    num_layers: int = Field(1, ge=1, le=4, description="residual blocks per head")
    top_k: int = Field(10, ge=1, le=64, description="candidates kept per head")
    tree: tuple[Path_, ...] = Field(DEFAULT_TREE, description="sparse tree, priority order")
    typical_epsilon: float = Field(0.09, gt=0.0, le=1.0, description="ε (hard threshold)")
    typical_delta: float = Field(0.3, gt=0.0, le=1.0, description="δ (entropy-scaled)")
    max_tree_nodes: Optional[int] = Field(
        None, ge=1, description="keep the first N-1 tree paths (N counts the root)"
    )

    @field_validator("tree", mode="before")
    @classmethod
    def _tuplify(cls, v):
        if isinstance(v, (list, tuple)):
            return tuple(tuple(int(r) for r in p) for p in v)
        return v

    @model_validator(mode="after")
    def _valid_tree(self):
        _check_tree(self.tree, self.num_heads, self.top_k)
        return self

    @property
    def effective_tree(self) -> tuple[Path_, ...]:
        """The tree after ``max_tree_nodes`` trimming (still valid: priority order)."""
        if self.max_tree_nodes is None:
            return self.tree
        return self.tree[: max(self.max_tree_nodes - 1, 1)]


class MedusaTrainConfig(BaseModel):
    """``sglang-pr medusa train``: Medusa-1 (frozen base), self-distilled data."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    num_heads: int = Field(5, ge=1, le=16)
    num_layers: int = Field(1, ge=1, le=4)
    loss_decay: float = Field(0.8, gt=0.0, le=1.0, description="λ_k = decay^k")
    num_prompts: int = Field(512, ge=8, description="train-split task prompts to generate on")
    temperatures: tuple[float, ...] = Field(
        (0.0, 1.0), min_length=1, description="each prompt is answered once per temperature"
    )
    # The project's one generation cap: the shipped model's longest traces fit in it.
    max_new_tokens: int = Field(SAMPLING.max_new_tokens, ge=8)
    epochs: int = Field(10, ge=1)
    batch_size: int = Field(256, ge=1)
    lr: float = Field(3e-3, gt=0.0)
    weight_decay: float = Field(0.0, ge=0.0)
    seed: int = 0
    calib_prompts: int = Field(64, ge=8, description="held-back generations for the tree")
    tree_nodes: int = Field(32, ge=2, le=128, description="tree size incl. the root")
    top_k: int = Field(10, ge=1, le=64)
    # None = decide from the sizes: share when own projections would make the heads file
    # larger than MAX_HEADS_FILE_BYTES (heads.py says why; SmolLM2 shares, the shipped tiny
    # model keeps its own).
    shared_lm_head: Optional[bool] = Field(None, description="heads reuse the base lm_head")
    # "seen": the training softmax runs over the tokens that occur in the generations only (a
    # few thousand of SmolLM2's 49,152: ~10x less work per step on a CPU), and those tokens
    # become the heads' draft vocabulary (heads.py): serving and calibration rank them only,
    # so the tree is sized on what the heads will really propose.
    softmax_vocab: Literal["full", "seen"] = "full"
    # Where the self-distillation answers come from: an SGLang server (the default) or this
    # process with transformers (greedy only; see ``local_generate.py`` for when).
    generator: Literal["server", "transformers"] = "server"
    # The heads also read the root token's embedding (heads.py says why). Off by default: the
    # reference Medusa layout, which the shipped tiny model's heads keep.
    root_input: bool = False
    # Head k >= 2 also reads the token it follows (heads.py, "Chained input"). Off by default.
    chain_input: bool = False

    @model_validator(mode="after")
    def _local_is_greedy(self):
        if self.generator == "transformers" and self.temperatures != (0.0,):
            raise ValueError("generator 'transformers' generates greedily: set temperatures to 0")
        return self

    def use_shared_lm_head(self, hidden_size: int, vocab_size: int) -> bool:
        if self.shared_lm_head is not None:
            return self.shared_lm_head
        own_bytes = 4 * self.num_heads * (vocab_size * hidden_size
                                          + self.num_layers * (hidden_size + 1) * hidden_size)
        return own_bytes > MAX_HEADS_FILE_BYTES


# A heads file ships in git: at most this many bytes (float32 on disk).
MAX_HEADS_FILE_BYTES = 20 * 1024 * 1024



# Serving-time ``MedusaConfig``: one rule, two callers (main process and the worker).
# Precedence, lowest first:
# 1. ``MedusaConfig`` defaults (above);
# 2. the heads directory (``--speculative-draft-model-path``): its head count, layer count and,
#    when it carries one, the tree and top-k it was calibrated with;
# 3. ``SGLANG_PR_MEDUSA``: a JSON object of ``MedusaConfig`` fields, e.g.
#    ``{"tree": [[0], [0, 0], [1]], "typical_epsilon": 0.05}`` (or ``@/path/to/file.json``);
#    unknown keys or bad values raise, naming the field;
# 4. ``--speculative-num-draft-tokens N``: keep the first N - 1 tree paths (N counts the root).
# The main process resolves it while SGLang resolves its server args (so a bad heads file fails
# there, before anything is served); the scheduler's worker resolves it again from the same
# inputs and gets the same tree.


class MedusaSettingsError(ValueError):
    """A bad MEDUSA setting; the message names the source and the field."""


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
    try:
        fields.update(json_setting(ENV_VAR, None if env is None else {ENV_VAR: env}))
    except ConfigError as e:
        raise MedusaSettingsError(str(e)) from None
    if num_draft_tokens is not None and "max_tree_nodes" not in fields:
        fields["max_tree_nodes"] = int(num_draft_tokens)
    try:
        return parse_model(MedusaConfig, fields, "")
    except ConfigError as e:
        raise MedusaSettingsError(f"MEDUSA setting {e}") from None


# SGLang reads the draft path's config.json with AutoConfig while it resolves server args; the
# reference Medusa format has no ``model_type``, so it gets this config class instead.
class MedusaHeadsConfig(PretrainedConfig):
    model_type = "medusa_heads"

    def __init__(self, medusa_num_heads: int = 5, medusa_num_layers: int = 1, **kwargs):
        self.medusa_num_heads = medusa_num_heads
        self.medusa_num_layers = medusa_num_layers
        super().__init__(**kwargs)


def medusa_hf_config(path: str) -> MedusaHeadsConfig:
    data = dict(read_heads_config(path))
    data.pop("model_type", None)
    data.pop("architectures", None)
    data.pop("sglang_pr", None)
    return MedusaHeadsConfig(**data)


def get_config_around(original, model, *args, **kwargs):
    """AROUND ``hf_transformers_utils.get_config``: a heads directory gets MedusaHeadsConfig."""
    from sglang_pr.medusa.checkpoint import is_medusa_dir

    if isinstance(model, str) and is_medusa_dir(model):
        return medusa_hf_config(model)
    return original(model, *args, **kwargs)
