"""``sglang-pr medusa train``: Medusa-1 heads by self-distillation, through the SGLang server.

1. generate: the base model answers the prompts (the shipped task's train split, or a JSONL of
   chat prompts with the chat template applied) THROUGH an SGLang server (greedy and, when
   configured, sampled with per-request seeds), so the heads learn the distribution they will
   draft for at serving time; ``generator="transformers"`` answers greedily in this process
   instead (``local_generate.py``);
2. featurise: the frozen base model (transformers, CPU) gives each position's last hidden state
   (post final norm, as SGLang's lm_head sees it) — computed once, the base never trains;
3. train: head k (1..K) on h_t predicts x_{t+k+1}; loss Σ_k 0.8^k · CE_k over every position
   from the last prompt token on (a head is first used right after prefill);
4. calibrate: per-head top-k accuracies (full vocabulary) on held-back generations (disjoint
   from the training prompts; the task's held-out split is never touched) -> the sparse tree
   (``tree.build_sparse_tree``; with a measured verify cost, sized by ``sizing.choose_tree``)
   saved with the heads.

Heads for a large vocabulary share the base lm_head (``heads.py``) and may train with the
softmax over the tokens seen in the generations (``softmax_vocab="seen"``).

Seeded end to end (prompt order, sampling seeds, init, batch order).
"""

from __future__ import annotations

import itertools
import json
import logging
import math
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import requests
import torch
import torch.nn.functional as F
from tqdm import tqdm

from sglang_pr.cpu_platform import SEEDED_SAMPLING_ENV
from sglang_pr.medusa.checkpoint import save_heads
from sglang_pr.medusa.config import MedusaTrainConfig
from sglang_pr.medusa.heads import MedusaHeads
from sglang_pr.medusa.sizing import choose_tree
from sglang_pr.medusa.tree import build_sparse_tree, expected_accept_length
from sglang_pr.model import SHIPPED_MODEL_DIR, task

logger = logging.getLogger(__name__)


@dataclass
class Sequence_:
    ids: list[int]  # BOS + prompt + completion (+ EOS when the model stopped on it)
    prompt_len: int


def task_prompts(n: int, seed: int, offset: int = 0) -> list[str]:
    """n distinct train-split prompts (``offset`` skips the first ones: a disjoint slice)."""
    return [p.prompt for p in task.distinct_problems("train", n + offset, seed)[offset:]]


def generate(base_url: str, prompts: list[str], temperature: float, max_new_tokens: int,
             seed: int, chunk: int = 64, progress: bool = True) -> list[dict]:
    """Completions from the running server, in order; seeded per request when sampling."""
    out: list[dict] = []
    bar = tqdm(total=len(prompts), desc=f"generate T={temperature}", disable=not progress)
    for start in range(0, len(prompts), chunk):
        batch = prompts[start : start + chunk]
        params = [
            {"temperature": temperature, "max_new_tokens": max_new_tokens}
            | ({"sampling_seed": seed * 1_000_003 + start + i} if temperature > 0 else {})
            for i in range(len(batch))
        ]
        r = requests.post(base_url + "/generate",
                          json={"text": batch, "sampling_params": params}, timeout=1800)
        r.raise_for_status()
        out.extend(r.json())
        bar.update(len(batch))
    bar.close()
    return out


def to_sequences(tokenizer, prompts: list[str], outputs: list[dict]) -> list[Sequence_]:
    seqs = []
    eos = tokenizer.eos_token_id
    for prompt, o in zip(prompts, outputs):
        p_ids = tokenizer(prompt)["input_ids"]
        # The server's own token ids when it returned them: re-tokenising a BPE model's text
        # need not give back the ids it generated.
        c_ids = list(o.get("output_ids") or
                     tokenizer(o["text"], add_special_tokens=False)["input_ids"])
        fin = o["meta_info"].get("finish_reason") or {}
        if fin.get("type") == "stop" and fin.get("matched") == eos and c_ids[-1:] != [eos]:
            c_ids = c_ids + [eos]
        seqs.append(Sequence_(p_ids + c_ids, len(p_ids)))
    return seqs


@torch.no_grad()
def featurise(model, seqs: list[Sequence_], num_heads: int, progress: bool = True):
    """Hidden states [N, H] float32, targets [N, K] int64 (-100 past the end), roots [N] int64.

    Position t of a sequence contributes when t >= prompt_len - 1 (the heads first run on the
    last prompt token) and t + 2 <= len - 1 (head 1 has a target); target k is ids[t + k + 1]
    and the root (the token the base model puts after t, read by root_input heads) ids[t + 1].
    """
    decoder = model.get_decoder()
    hs, ts, rs = [], [], []
    for s in tqdm(seqs, desc="featurise", disable=not progress):
        ids = torch.tensor([s.ids])
        h = decoder(input_ids=ids).last_hidden_state[0].float()  # [T, H], post final norm
        first, last = s.prompt_len - 1, len(s.ids) - 3
        if last < first:
            continue
        pos = torch.arange(first, last + 1)
        tgt = torch.full((len(pos), num_heads), -100, dtype=torch.long)
        full = torch.tensor(s.ids)
        for k in range(num_heads):
            idx = pos + k + 2
            ok = idx < len(s.ids)
            tgt[ok, k] = full[idx[ok]]
        hs.append(h[pos])
        ts.append(tgt)
        rs.append(full[pos + 1])
    return torch.cat(hs), torch.cat(ts), torch.cat(rs)


def teacher_prev(targets: torch.Tensor) -> torch.Tensor:
    """[N, K] targets -> [N, K-1]: the true token head k >= 2 follows (head k-1's target; 0
    where that is past the end, where head k has no target either)."""
    return targets[:, :-1].clamp(min=0)


def head_loss(
    logits: torch.Tensor, targets: torch.Tensor, decay: float
) -> tuple[torch.Tensor, list[float]]:
    """Σ_k decay^k · CE_k, k = 1..K; logits [N, K, V], targets [N, K] (-100 ignored)."""
    total, parts = logits.new_zeros(()), []
    for k in range(logits.shape[1]):
        ce = F.cross_entropy(logits[:, k], targets[:, k], ignore_index=-100)
        parts.append(ce.item())
        total = total + decay ** (k + 1) * ce
    return total, parts


def softmax_rows(targets: torch.Tensor, vocab: str
                 ) -> tuple[Optional[torch.Tensor], torch.Tensor]:
    """(vocabulary rows the training softmax spans, targets re-indexed into them).

    "full": (None, targets). "seen": the sorted distinct target tokens [V'] and each target's
    index among them (-100 kept), so logits [N, K, V'] line up with the new targets.
    """
    if vocab == "full":
        return None, targets
    valid = targets >= 0
    rows = torch.unique(targets[valid])  # [V'] sorted
    remapped = torch.full_like(targets, -100)
    remapped[valid] = torch.searchsorted(rows, targets[valid])
    return rows, remapped


def train_loop(heads: MedusaHeads, hidden: torch.Tensor, targets: torch.Tensor,
               cfg: MedusaTrainConfig, progress: bool = True,
               roots: Optional[torch.Tensor] = None) -> list[float]:
    gen = torch.Generator().manual_seed(cfg.seed)
    opt = torch.optim.AdamW(heads.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps_per_epoch = math.ceil(len(hidden) / cfg.batch_size)
    total = steps_per_epoch * cfg.epochs
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=total,
                                                pct_start=0.1)
    prev = teacher_prev(targets)  # [N, K-1] token ids, before the targets are re-indexed
    rows, targets = softmax_rows(targets, cfg.softmax_vocab)
    losses: list[float] = []
    bar = tqdm(total=total, desc="train heads", disable=not progress)
    heads.train()
    for _ in range(cfg.epochs):
        order = torch.randperm(len(hidden), generator=gen)
        for i in range(steps_per_epoch):
            idx = order[i * cfg.batch_size : (i + 1) * cfg.batch_size]
            root = None if roots is None else roots[idx]
            logits = heads(hidden[idx], rows, root, prev[idx])
            loss, parts = head_loss(logits, targets[idx], cfg.loss_decay)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            losses.append(loss.item())
            bar.update(1)
            bar.set_postfix(loss=f"{losses[-1]:.3f}", ce1=f"{parts[0]:.3f}")
    bar.close()
    heads.eval()
    return losses


@torch.no_grad()
def topk_accuracy(heads: MedusaHeads, hidden: torch.Tensor, targets: torch.Tensor,
                  top_k: int, roots: Optional[torch.Tensor] = None) -> list[list[float]]:
    """acc[k][r] = P(head k+1's rank-r candidate is the target), over valid positions.

    Chain_input heads follow the true tokens, so acc[k] is head k+1's accuracy given that the
    drafts before it were right: what a tree path needs (``tree.expected_accept_length``)."""
    prev = teacher_prev(targets) if heads.chain_input else None
    ranked = heads.topk(hidden, top_k, roots, prev)  # [N, K, top_k]
    acc = []
    for k in range(ranked.shape[1]):
        valid = targets[:, k] >= 0
        hit = ranked[valid, k] == targets[valid, k].unsqueeze(-1)  # [n, top_k]
        acc.append([float(x) for x in hit.float().mean(0)])
    return acc


def _server(model_path: str, base_url: Optional[str], port: Optional[int] = None):
    """The given server, or a fresh plain one on the base model (stopped afterwards)."""
    import contextlib

    if base_url:
        return contextlib.nullcontext(base_url.rstrip("/"))
    from sglang_pr.server.launcher import launch

    @contextlib.contextmanager
    def run():
        # Seeded sampling on a CPU server (see cpu_platform/seeded_sampling.py): the sampled
        # generations, and so the heads, are reproducible from --seed.
        env = {SEEDED_SAMPLING_ENV: "1"}
        with launch(model_path=model_path, port=port, env=env, timeout_s=900) as handle:
            yield handle.base_url

    return run()


def _generations(model_path, prompts, calib, cfg, base_url, port, progress, log, data_cache):
    """The server's answers ([(T, outputs)], calib outputs); ``data_cache`` (a JSON file) is
    reused when it holds the same prompts, temperatures and length, else (re)written."""
    key = {"model": str(model_path), "prompts": prompts, "calib": calib,
           "temperatures": list(cfg.temperatures), "max_new_tokens": cfg.max_new_tokens,
           "seed": cfg.seed} | ({"generator": cfg.generator} if cfg.generator != "server" else {})
    cache = Path(data_cache) if data_cache else None
    if cache is not None and cache.is_file():
        data = json.loads(cache.read_text())
        if data.get("key") == key:
            log(f"reusing generations from {cache}")
            return [tuple(g) for g in data["gens"]], data["calib"]
    if cfg.generator == "transformers":
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from sglang_pr.medusa.local_generate import generate_greedy

        log(f"generating in-process (transformers, greedy): {len(prompts)} + {len(calib)} prompts")
        tok = AutoTokenizer.from_pretrained(model_path)
        model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32).eval()
        gens = [(0.0, generate_greedy(model, tok, prompts, cfg.max_new_tokens, progress=progress))]
        calib_out = generate_greedy(model, tok, calib, cfg.max_new_tokens, progress=progress)
        _write_cache(cache, key, gens, calib_out)
        return gens, calib_out
    with _server(model_path, base_url, port) as url:
        log(f"generating through {url}: {len(prompts)} prompts x T={list(cfg.temperatures)}")
        gens = [(t, generate(url, prompts, t, cfg.max_new_tokens, cfg.seed, progress=progress))
                for t in cfg.temperatures]
        calib_out = generate(url, calib, 0.0, cfg.max_new_tokens, cfg.seed, progress=progress)
    _write_cache(cache, key, gens, calib_out)
    return gens, calib_out


def _write_cache(cache: Optional[Path], key: dict, gens, calib_out) -> None:
    if cache is None:
        return
    slim = lambda outs: [{"text": o["text"], "output_ids": o.get("output_ids"),  # noqa: E731
                          "meta_info": {"finish_reason": o["meta_info"].get("finish_reason")}}
                         for o in outs]
    cache.write_text(json.dumps({"key": key, "gens": [(t, slim(o)) for t, o in gens],
                                 "calib": slim(calib_out)}))


def split_prompts(cfg: MedusaTrainConfig, prompts: Optional[list[str]],
                  heldout: Optional[list[str]]) -> tuple[list[str], list[str]]:
    """(training prompts, held-out calibration prompts).

    No prompts: the shipped task's train split (the first ``num_prompts`` train, the next
    ``calib_prompts`` calibrate). Prompts without held-out ones: the last ``calib_prompts`` of
    them are held back. Both given: used as they are (they must not overlap).
    """
    if prompts is None:
        return (task_prompts(cfg.num_prompts, cfg.seed),
                task_prompts(cfg.calib_prompts, cfg.seed, offset=cfg.num_prompts))
    if heldout is None:
        if len(prompts) <= cfg.calib_prompts:
            raise ValueError(f"{len(prompts)} prompts: need more than calib_prompts="
                             f"{cfg.calib_prompts} (held back for the tree)")
        return prompts[: -cfg.calib_prompts], prompts[-cfg.calib_prompts :]
    overlap = set(prompts) & set(heldout)
    if overlap:
        raise ValueError(f"{len(overlap)} held-out prompts are also training prompts, e.g. "
                         f"{next(iter(overlap))[:60]!r}")
    return list(prompts), list(heldout)


def train_heads(model_path: str, out: str | Path, cfg: MedusaTrainConfig,
                base_url: Optional[str] = None, progress: bool = True,
                log: Callable[[str], None] = print, port: Optional[int] = None,
                data_cache: Optional[str] = None, prompts: Optional[list[str]] = None,
                heldout: Optional[list[str]] = None,
                verify_cost: Optional[dict[int, float]] = None,
                model_label: Optional[str] = None, extra: Optional[dict] = None) -> dict:
    """The whole recipe; writes ``out`` and returns a report (also saved in config.json).

    ``prompts`` / ``heldout``: ready-to-serve texts (chat template applied), see
    :func:`split_prompts`. ``verify_cost`` ({nodes: ms per step}): size the tree to this
    hardware (``sizing.choose_tree``); without it the tree has ``cfg.tree_nodes`` nodes.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    t0 = time.time()
    random.seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    prompts, calib = split_prompts(cfg, prompts, heldout)
    gens, calib_out = _generations(model_path, prompts, calib, cfg, base_url, port, progress,
                                   log, data_cache)
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32).eval()
    seqs = list(itertools.chain.from_iterable(to_sequences(tokenizer, prompts, o) for _, o in gens))
    hidden, targets, roots = featurise(model, seqs, cfg.num_heads, progress)
    c_hidden, c_targets, c_roots = featurise(model, to_sequences(tokenizer, calib, calib_out),
                                             cfg.num_heads, progress)
    lm_head = model.get_output_embeddings().weight.detach().float()
    shared = cfg.use_shared_lm_head(hidden.shape[1], lm_head.shape[0])
    heads = MedusaHeads(hidden.shape[1], lm_head.shape[0], cfg.num_heads, cfg.num_layers,
                        base_lm_head=lm_head, shared_lm_head=shared, root_input=cfg.root_input,
                        chain_input=cfg.chain_input,
                        base_embedding=model.get_input_embeddings().weight.detach().float())
    log(f"training {cfg.num_heads} heads on {len(hidden)} positions "
        f"({'shared base lm_head' if shared else 'own projections'}"
        f"{', root-token input' if cfg.root_input else ''}"
        f"{', chained input' if cfg.chain_input else ''})")
    losses = train_loop(heads, hidden, targets, cfg, progress, roots)
    # the tokens the softmax spanned ("seen"): what the heads learnt to rank, so what they draft
    heads.set_draft_vocab(softmax_rows(targets, cfg.softmax_vocab)[0])
    acc = topk_accuracy(heads, c_hidden, c_targets, cfg.top_k, c_roots)
    sizing = None
    if verify_cost is not None:
        tree, sizing = choose_tree(acc, verify_cost)
    else:
        tree = build_sparse_tree(acc, cfg.tree_nodes)
    report = {
        "config": json.loads(cfg.model_dump_json()),
        "positions": int(len(hidden)),
        "draft_vocab_size": None if heads.draft_vocab is None else len(heads.draft_vocab),
        "final_loss": sum(losses[-20:]) / max(len(losses[-20:]), 1),
        "calib_top1": [a[0] for a in acc],
        "calib_topk_accuracy": acc,
        "expected_accept_length": expected_accept_length(tree, acc),
        "seconds": round(time.time() - t0, 1),
    } | ({"tree_sizing": sizing} if sizing else {}) | (extra or {})
    save_heads(out, heads, base_model=model_label or _model_label(model_path), tree=tree,
               top_k=cfg.top_k, extra={"training": report})
    log(f"wrote {out}: head top-1 accuracies {[round(a, 3) for a in report['calib_top1']]}, "
        f"tree {len(tree) + 1} nodes, expected accept length "
        f"{report['expected_accept_length']:.2f}")
    return report


def _model_label(model_path) -> str:
    """The base model as recorded in the heads' config: the shipped model by its path inside
    the repository (machine-independent, so retraining reproduces the file), others as given."""
    p = Path(model_path).resolve()
    if p == SHIPPED_MODEL_DIR.resolve():
        return "sglang_pr/assets/tiny-reasoner"
    return str(model_path)
