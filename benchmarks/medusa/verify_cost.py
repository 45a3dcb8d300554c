"""Verify cost per tree size on this CPU (batch 1): the input of ``medusa train --verify-cost``.

    python benchmarks/medusa/verify_cost.py --model-path smollm2-135m \\
        --out sglang_pr/assets/smollm2-135m-medusa/verify_cost.json

One step verifying n nodes = the base model's forward of n tokens over a cached prefix +
the verify logits + (n > 1) the heads' top-k (``sizing.measure_step_cost``; n = 1 is plain
decoding). Fastest of interleaved repeats (a shared machine only adds time). The JSON also goes to
``benchmarks/results/medusa_verify_cost.json`` with the run metadata, and a PNG beside it.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from sglang_pr.benchmark_meta import run_metadata
from sglang_pr.medusa.heads import MedusaHeads
from sglang_pr.medusa.sizing import measure_step_cost
from sglang_pr.models import resolve_model_path
from sglang_pr.optional import require_or_exit

RESULTS = Path(__file__).resolve().parents[1] / "results"
NODE_COUNTS = (1, 2, 4, 6, 8, 12, 16, 24, 32, 48, 64)


def main(argv=None) -> int:
    require_or_exit((("matplotlib", "bench", "the plot"),))  # before minutes of timing
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model-path", default="smollm2-135m")
    ap.add_argument("--num-heads", type=int, default=4)
    ap.add_argument("--prefix-len", type=int, default=160)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--nodes", default=",".join(map(str, NODE_COUNTS)),
                    help="comma list of node counts (1 = plain decoding, always measured)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's; "
                    "a CPU server runs cores - 1)")
    ap.add_argument("--draft-vocab", type=int, default=0, help="tokens the heads rank (0: all); "
                    "heads trained with --softmax-vocab seen draft from the tokens seen, 5,285 "
                    "for SmolLM2's shipped heads")
    ap.add_argument("--root-input", action="store_true",
                    help="heads that also read the root token (medusa train --root-input)")
    ap.add_argument("--chain-input", action="store_true",
                    help="heads run one after the other (medusa train --chain-input)")
    ap.add_argument("--out", default=None, help="also write the cost table here")
    args = ap.parse_args(argv)
    if args.draft_vocab < 0 or (args.threads is not None and args.threads <= 0):
        ap.error("--draft-vocab must be >= 0 and --threads > 0")
    from transformers import AutoModelForCausalLM

    if args.threads:
        torch.set_num_threads(args.threads)
    path = resolve_model_path(args.model_path)
    model = AutoModelForCausalLM.from_pretrained(str(path), dtype=torch.float32).eval()
    lm = model.get_output_embeddings().weight.detach()
    heads = MedusaHeads(lm.shape[1], lm.shape[0], args.num_heads, shared_lm_head=True,
                        base_lm_head=lm, root_input=args.root_input,
                        chain_input=args.chain_input,
                        base_embedding=model.get_input_embeddings().weight.detach())
    if args.draft_vocab:  # its size is what costs: any ids will do
        if args.draft_vocab > lm.shape[0]:
            ap.error(f"--draft-vocab: {args.draft_vocab} exceeds the vocabulary ({lm.shape[0]})")
        gen = torch.Generator().manual_seed(0)
        heads.set_draft_vocab(torch.randperm(lm.shape[0], generator=gen)[:args.draft_vocab].sort()[0])
    heads.fuse()
    nodes = sorted({1, *(int(n) for n in args.nodes.split(","))})
    cost = measure_step_cost(model, heads, nodes, args.prefix_len, args.repeats)
    table = {"model": args.model_path, "num_heads": args.num_heads,
             "prefix_len": args.prefix_len, "repeats": args.repeats,
             "torch_threads": torch.get_num_threads(), "draft_vocab": args.draft_vocab or None,
             "root_input": args.root_input, "chain_input": args.chain_input,
             "cost_ms": {str(n): round(ms, 2) for n, ms in cost.items()}}
    for n, ms in cost.items():
        print(f"{n:3d} nodes: {ms:7.1f} ms/step ({ms / cost[1]:.2f}x plain)")
    if args.out:
        Path(args.out).write_text(json.dumps(table, indent=1) + "\n")
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "medusa_verify_cost.json").write_text(
        json.dumps({"meta": run_metadata(), **table}, indent=1) + "\n")
    _plot(cost, RESULTS / "medusa_verify_cost.png", args.model_path)
    return 0


def _plot(cost: dict[int, float], path: Path, model: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.plot(list(cost), list(cost.values()), marker="o")
    ax.set_xlabel("tree nodes verified (batch 1)")
    ax.set_ylabel("ms per step")
    ax.set_title(f"MEDUSA verify cost, {model}, CPU")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
