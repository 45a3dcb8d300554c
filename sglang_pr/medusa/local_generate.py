"""Greedy self-distillation generations in this process (transformers), in the server's format.

``sglang-pr medusa train --generator transformers``: the same model, the same greedy decoding,
without an SGLang server. For a shared 2-core machine where a server's batched CPU decode is
the slow part (SmolLM2: ~19 tokens/s at batch 64 through the server, and its scheduler
watchdog can kill a step stalled by memory pressure). The heads learn the model's own greedy
continuations either way; the server remains the default.
"""

from __future__ import annotations

import torch
from tqdm import tqdm


@torch.no_grad()
def generate_greedy(model, tokenizer, prompts: list[str], max_new_tokens: int,
                    batch_size: int = 32, progress: bool = True) -> list[dict]:
    """``[{"text", "output_ids", "meta_info": {"finish_reason"}}]`` like SGLang's /generate.

    Batches are left-padded (the attention mask hides the pads); a row's ids stop at its first
    EOS, which is kept (finish_reason stop, matched EOS) as the server reports it.
    """
    eos = tokenizer.eos_token_id
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos
    out: list[dict] = []
    bar = tqdm(total=len(prompts), desc="generate (transformers, greedy)", disable=not progress)
    for start in range(0, len(prompts), batch_size):
        encoded = [tokenizer(p)["input_ids"] for p in prompts[start : start + batch_size]]
        width = max(len(e) for e in encoded)
        ids = torch.tensor([[pad] * (width - len(e)) + e for e in encoded])  # [b, width]
        mask = torch.tensor([[0] * (width - len(e)) + [1] * len(e) for e in encoded])
        gen = model.generate(input_ids=ids, attention_mask=mask, do_sample=False,
                             max_new_tokens=max_new_tokens, pad_token_id=pad,
                             eos_token_id=eos)[:, width:]  # [b, <= max_new_tokens]
        for row in gen.tolist():
            stop = row.index(eos) + 1 if eos in row else None
            ids_out = row[:stop] if stop else row[:max_new_tokens]
            reason = {"type": "stop", "matched": eos} if stop else {"type": "length"}
            out.append({"text": tokenizer.decode(ids_out, skip_special_tokens=True),
                        "output_ids": ids_out, "meta_info": {"finish_reason": reason}})
        bar.update(len(encoded))
    bar.close()
    return out
