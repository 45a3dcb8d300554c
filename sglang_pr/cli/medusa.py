"""``sglang-pr medusa train``: train Medusa heads for a model (defaults: the shipped model).

    sglang-pr medusa train                       # reproduces sglang_pr/assets/tiny-reasoner-medusa
    sglang-pr medusa train --model-path M --out DIR --num-prompts 256 --epochs 2

Starts its own plain SGLang server on the model for the self-distillation generations unless
--server-url points at a running one. Every hyper-parameter defaults to ``MedusaTrainConfig``.
"""

from __future__ import annotations

import argparse

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
    t.add_argument("--quiet", action="store_true", help="no progress bars")
    for flag, (_, typ) in _FIELDS.items():
        t.add_argument(flag, type=typ, default=None)
    t.set_defaults(func=run_train)


def train_config_from_args(args: argparse.Namespace):
    from sglang_pr.medusa.config import MedusaTrainConfig

    fields = {f: getattr(args, f) for f, _ in _FIELDS.values() if getattr(args, f) is not None}
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


def run_train(args: argparse.Namespace, extra: list[str]) -> int:
    from pathlib import Path

    cfg = train_config_from_args(args)
    if not (Path(args.model_path) / "config.json").is_file():
        raise CliError(f"--model-path {args.model_path}: no config.json there")
    from sglang_pr.medusa.train import train_heads

    train_heads(args.model_path, args.out, cfg, base_url=args.server_url,
                progress=not args.quiet, port=args.port, data_cache=args.data_cache)
    return 0
