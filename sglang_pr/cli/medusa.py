"""``sglang-pr medusa train``: train Medusa heads for a model (defaults: the shipped model).

    sglang-pr medusa train                       # reproduces sglang_pr/assets/tiny-reasoner-medusa
    sglang-pr medusa train --model-path M --out DIR --num-prompts 256 --epochs 2
    sglang-pr medusa train --model-path smollm2-135m --prompts chat.jsonl --out DIR

Starts its own plain SGLang server on the model for the self-distillation generations unless
--server-url points at a running one. Every hyper-parameter defaults to ``MedusaTrainConfig``.
--model-path takes a folder or a known model name (``sglang-pr models``). --prompts: JSONL of
user messages ({"prompt": ...} or {"question": ...}); the model's chat template is applied.
The exact command behind each shipped heads directory is in its ``config.json``
(``sglang_pr.training.command``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from sglang_pr.cli import CliError
from sglang_pr.validation import ConfigError, parse_model

# CLI flag -> MedusaTrainConfig field (only those worth changing from the command line).
_FIELDS = {
    "--num-heads": ("num_heads", int),
    "--num-prompts": ("num_prompts", int),
    "--calib-prompts": ("calib_prompts", int),
    "--epochs": ("epochs", int),
    "--batch-size": ("batch_size", int),
    "--lr": ("lr", float),
    "--seed": ("seed", int),
    "--tree-nodes": ("tree_nodes", int),
    "--top-k": ("top_k", int),
    "--max-new-tokens": ("max_new_tokens", int),
}


def add_parser(sub) -> None:
    from sglang_pr.medusa import SHIPPED_HEADS_DIR
    from sglang_pr.model import SHIPPED_MODEL_DIR

    p = sub.add_parser("medusa", help="Medusa heads (train)", description=__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    msub = p.add_subparsers(dest="medusa_command", required=True, metavar="ACTION")
    t = msub.add_parser("train", help="train Medusa-1 heads by self-distillation")
    t.add_argument("--model-path", default=str(SHIPPED_MODEL_DIR), help="base model directory")
    t.add_argument("--out", default=str(SHIPPED_HEADS_DIR), help="heads directory to write")
    t.add_argument("--server-url", default=None,
                   help="use this running server (plain, same model) for the generations")
    t.add_argument("--port", type=int, default=None,
                   help="port for the server this command starts (default: any free port)")
    t.add_argument("--temperatures", default=None,
                   help="comma-separated generation temperatures (default 0,1)")
    t.add_argument("--data-cache", default=None,
                   help="JSON file: reuse the generations stored there (same prompts/settings), "
                        "else write them there")
    t.add_argument("--prompts", default=None,
                   help="JSONL chat prompts to self-distil on (default: the shipped task's)")
    t.add_argument("--heldout-prompts", default=None,
                   help="JSONL prompts for calibrating the tree (default: the last "
                        "--calib-prompts of --prompts)")
    t.add_argument("--verify-cost", default=None,
                   help="JSON of measured ms per verify step by node count "
                        "(benchmarks/medusa/verify_cost.py): size the tree to this hardware")
    t.add_argument("--lm-head", choices=("auto", "shared", "own"), default="auto",
                   help="heads project through the base lm_head (shared) or their own "
                        "(auto: shared when own ones would pass 20 MB)")
    t.add_argument("--softmax-vocab", choices=("full", "seen"), default=None,
                   help="training softmax over the full vocabulary or the tokens seen in the "
                        "generations (faster for large vocabularies)")
    t.add_argument("--generator", choices=("server", "transformers"), default=None,
                   help="self-distil through an SGLang server (default) or in this process "
                        "with transformers (greedy only)")
    t.add_argument("--root-input", action="store_true", default=None,
                   help="the heads also read the root token (the base model's next token), "
                        "through the base input embedding")
    t.add_argument("--chain-input", action="store_true", default=None,
                   help="head k >= 2 also reads the token it follows (the previous head's "
                        "top-1 draft when serving)")
    t.add_argument("--quiet", action="store_true", help="no progress bars")
    for flag, (_, typ) in _FIELDS.items():
        t.add_argument(flag, type=typ, default=None)
    t.set_defaults(func=run_train)


def train_config_from_args(args: argparse.Namespace):
    from sglang_pr.medusa.config import MedusaTrainConfig

    fields = {f: getattr(args, f) for f, _ in _FIELDS.values() if getattr(args, f) is not None}
    if args.generator:
        fields["generator"] = args.generator
    if args.softmax_vocab:
        fields["softmax_vocab"] = args.softmax_vocab
    if args.root_input:
        fields["root_input"] = True
    if args.chain_input:
        fields["chain_input"] = True
    if args.lm_head != "auto":
        fields["shared_lm_head"] = args.lm_head == "shared"
    if args.temperatures:
        try:
            fields["temperatures"] = tuple(float(x) for x in args.temperatures.split(","))
        except ValueError:
            raise CliError(f"--temperatures {args.temperatures}: not a comma list of numbers")
    try:
        return parse_model(MedusaTrainConfig, fields, "")
    except ConfigError as e:
        flag = "--" + e.field.split(".")[0].replace("_", "-")
        raise CliError(f"{flag}{str(e)[len(e.field):]}") from None


def _read_inputs(args: argparse.Namespace, model_path) -> dict:
    """Prompts (chat template applied) and the verify-cost table, each named on error."""
    from sglang_pr.data.prompts import format_prompts
    from sglang_pr.medusa.prompt_file import PromptFileError, read_prompt_file
    from sglang_pr.medusa.sizing import read_cost

    out: dict = {}
    try:
        if args.prompts:
            out["prompts"] = format_prompts(model_path, read_prompt_file(args.prompts))
        if args.heldout_prompts:
            if not args.prompts:
                raise CliError("--heldout-prompts needs --prompts")
            out["heldout"] = format_prompts(model_path, read_prompt_file(args.heldout_prompts))
    except PromptFileError as e:
        raise CliError(f"--prompts {e}") from None
    if args.verify_cost:
        try:
            out["verify_cost"] = read_cost(args.verify_cost)
        except ValueError as e:
            raise CliError(f"--verify-cost {e}") from None
    return out


def run_train(args: argparse.Namespace, extra: list[str]) -> int:
    import shlex
    import sys

    from sglang_pr.models import ModelError, resolve_model_path

    cfg = train_config_from_args(args)
    try:
        model_path = resolve_model_path(args.model_path)
    except ModelError as e:
        raise CliError(f"--model-path {e}") from None
    inputs = _read_inputs(args, model_path)
    from sglang_pr.medusa.train import split_prompts, train_heads

    try:
        split_prompts(cfg, inputs.get("prompts"), inputs.get("heldout"))
    except ValueError as e:
        raise CliError(f"--prompts {e}") from None
    # A model given by name is recorded by name (machine-independent, so a retrain on another
    # machine writes the same config.json); a folder as given.
    named = None if Path(args.model_path).is_dir() else args.model_path
    command = "sglang-pr medusa " + " ".join(shlex.quote(a) for a in _result_args(sys.argv[2:]))
    train_heads(str(model_path), args.out, cfg, base_url=args.server_url,
                progress=not args.quiet, port=args.port, data_cache=args.data_cache,
                model_label=named,
                extra={"command": command} if args.prompts else None, **inputs)
    return 0


# Flags that change how the generations are obtained or shown, never the heads written.
_NOT_IN_RESULT = {"--data-cache": 1, "--server-url": 1, "--port": 1, "--quiet": 0}


def _result_args(argv: list[str]) -> list[str]:
    """``argv`` without the flags above: the command recorded beside the heads reproduces
    them on any machine."""
    out, skip = [], 0
    for a in argv:
        if skip:
            skip -= 1
            continue
        flag = a.split("=", 1)[0]
        if flag in _NOT_IN_RESULT:
            skip = _NOT_IN_RESULT[flag] if "=" not in a else 0
            continue
        out.append(a)
    return out
