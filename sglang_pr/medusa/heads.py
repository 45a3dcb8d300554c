"""Medusa heads: K small heads on the base model's last hidden state.

Head k (k = 1..K) is ``num_layers`` residual blocks x + SiLU(W x + b) followed by a vocab
projection; it predicts the token k + 1 positions after the hidden state's own position (the
base lm_head predicts the next one). W and b start at zero, so SiLU(0) = 0 makes each block
the identity, and the projection starts as a copy of the base lm_head: an untrained head
predicts what the base model predicts for the next token, a sensible starting point.

The module layout matches the reference Medusa checkpoints (``medusa_lm_head`` state dict):
``{k}.{j}.linear.weight|bias`` for block j of head k and ``{k}.{num_layers}.weight`` for the
projection, so the same state dict loads either way.

Two variants (``shared_lm_head``):

* own projections (False, the reference layout): each head has its own trainable [V, H]
  projection. Fine for the shipped model (V = 100, H = 128: 51 KB a head).
* shared base lm_head (True): the heads are the residual blocks only and every head projects
  through the base model's frozen lm_head, held by reference (one copy, never trained, never
  saved). Chosen for real vocabularies: SmolLM2's lm_head is 49,152 x 576 = 113 MB in float32,
  so five own projections would make a 566 MB heads file (git takes <= 20 MB) and five copies
  in memory; its blocks are 576 x 576 + 576 = 1.3 MB a head. The first Medusa release shared
  the lm_head the same way, and on disk it is the reference layout without ``{k}.{L}.weight``.

Draft vocabulary (``set_draft_vocab``, optional): the heads rank only V' chosen tokens. A draft
only has to be plausible (verification keeps the output exact), and heads trained with their
softmax over the tokens seen in training (``medusa train --softmax-vocab seen``) rank only
those anyway. Serving then projects through V' rows, gathered once and stored transposed, not
the whole lm_head: for SmolLM2 5,285 of 49,152 rows, so the heads' part of a verify step stops
re-reading 113 MB (with it, a 2-node verify step costs 1.14x a plain one at one thread:
``benchmarks/results/medusa_verify_cost.json``).

Root-token input (``root_input``, optional; off in the reference layout): every head also reads
the embedding of the token its hidden state is followed by, the tree's root (the base model's
own next token, known when the heads run), through one shared zero-initialised [H, H]
projection: x = h + P·E[root] (E: the base model's input embedding, held by reference like the
shared lm_head). A plain head must guess the root as well as the token after it; with the root
given, head 1's held-out top-1 on SmolLM2 went 0.52 -> 0.63 on the same 93,014 positions
(tokens per verify step: 1.62 for the earlier plain heads, 1.95 with root input; README).
EAGLE's and Hydra's first draft step reads the sampled token the same way. On disk: ``root_proj.weight``
and ``"medusa_root_input": true`` in config.json.

Chained input (``chain_input``, optional): head k >= 2 also reads the token it follows, through
its own zero-initialised [H, H] projection Q_k: x_k = x + Q_k·E[prev_k]. Training feeds the
true token (teacher forcing); serving feeds head k-1's top-1 draft, so the heads run one after
the other (``topk``). A head-k candidate can only be accepted when the drafts before it were,
i.e. when prev_k was right, so teacher-forced accuracy is exactly what a chain of top-1 drafts
needs (Hydra's sequentially dependent heads). On SmolLM2, with root input, head 2's held-out
top-1 went 0.44 -> 0.57 on the same data (2.04 tokens per verify step). On disk:
``chain_proj.{k-2}.weight`` and ``"medusa_chain_input": true``.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import nn


class ResBlock(nn.Module):
    """x + SiLU(W x + b), W and b zero-initialised (identity at start)."""

    def __init__(self, hidden_size: int):
        super().__init__()
        self.linear = nn.Linear(hidden_size, hidden_size)
        nn.init.zeros_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)
        self.act = nn.SiLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.act(self.linear(x))


class MedusaHeads(nn.Module):
    """K heads; ``forward(hidden [N, H]) -> logits [N, K, V]``."""

    def __init__(
        self,
        hidden_size: int,
        vocab_size: int,
        num_heads: int,
        num_layers: int = 1,
        base_lm_head: Optional[torch.Tensor] = None,
        shared_lm_head: bool = False,
        root_input: bool = False,
        base_embedding: Optional[torch.Tensor] = None,
        chain_input: bool = False,
    ):
        super().__init__()
        self.hidden_size, self.vocab_size = hidden_size, vocab_size
        self.num_heads, self.num_layers = num_heads, num_layers
        self.shared_lm_head = shared_lm_head
        own = 0 if shared_lm_head else 1  # the per-head projection, when not shared
        self.heads = nn.ModuleList(
            nn.Sequential(*[ResBlock(hidden_size) for _ in range(num_layers)],
                          *[nn.Linear(hidden_size, vocab_size, bias=False) for _ in range(own)])
            for _ in range(num_heads)
        )
        # The shared projection [V, H]: a non-persistent buffer (follows .to(), is not in
        # state_dict or parameters(), so it is neither saved nor trained).
        self.register_buffer("lm_head", None, persistent=False)
        self.register_buffer("draft_vocab", None, persistent=False)  # [V'] int64, or None
        self.root_input = root_input
        if root_input:  # zero: untrained, the heads ignore the root
            self.root_proj = nn.Linear(hidden_size, hidden_size, bias=False)
            nn.init.zeros_(self.root_proj.weight)
        self.chain_input = chain_input
        if chain_input:  # Q_2 .. Q_K, zero at start like P
            self.chain_proj = nn.ModuleList(nn.Linear(hidden_size, hidden_size, bias=False)
                                            for _ in range(num_heads - 1))
            for q in self.chain_proj:
                nn.init.zeros_(q.weight)
        self.register_buffer("embedding", None, persistent=False)  # [V, H] by reference
        self._fused: Optional[tuple] = None
        if base_lm_head is not None:
            self.init_from_lm_head(base_lm_head)
        if base_embedding is not None:
            self.set_embedding(base_embedding)

    def init_from_lm_head(self, weight: torch.Tensor) -> None:
        """Own projections: copy the base lm_head [V, H] into each. Shared: keep a reference."""
        if tuple(weight.shape) != (self.vocab_size, self.hidden_size):
            raise ValueError(
                f"lm_head shape {tuple(weight.shape)} != (vocab {self.vocab_size}, "
                f"hidden {self.hidden_size})"
            )
        if self.shared_lm_head:
            self.lm_head = weight.detach()
            return
        with torch.no_grad():
            for head in self.heads:
                head[-1].weight.copy_(weight)

    def set_embedding(self, weight: torch.Tensor) -> None:
        """The base model's input embedding [V, H] (root_input heads read E[root]); by reference."""
        if tuple(weight.shape) != (self.vocab_size, self.hidden_size):
            raise ValueError(f"embedding shape {tuple(weight.shape)} != (vocab "
                             f"{self.vocab_size}, hidden {self.hidden_size})")
        self.embedding = weight.detach()
        self._fused = None

    def _embed(self, ids: Optional[torch.Tensor], what: str, dtype) -> torch.Tensor:
        if ids is None or self.embedding is None:
            raise RuntimeError(f"{what} Medusa heads need the {what} tokens and "
                               f"set_embedding(base input embedding)")
        return self.embedding[ids].to(dtype)

    def _with_root(self, hidden: torch.Tensor, root: Optional[torch.Tensor]) -> torch.Tensor:
        """h [N, H] -> h + P·E[root] (root [N] int64) for root_input heads, else h."""
        if not self.root_input:
            return hidden
        return hidden + self.root_proj(self._embed(root, "root", hidden.dtype))

    def _with_prev(self, k: int, x: torch.Tensor, prev_k: Optional[torch.Tensor]) -> torch.Tensor:
        """Head k's input (0-based): x + Q_k·E[prev_k] for chain_input heads past the first."""
        if not self.chain_input or k == 0:
            return x
        return x + self.chain_proj[k - 1](self._embed(prev_k, "previous", x.dtype))

    def set_draft_vocab(self, ids: Optional[torch.Tensor]) -> "MedusaHeads":
        """Rank only these token ids ([V'], distinct, < vocab_size); None: the whole vocab.
        Call :meth:`fuse` again after it when serving."""
        if ids is not None:
            ids = torch.as_tensor(ids, dtype=torch.int64).flatten()
            if ids.numel() == 0 or ids.unique().numel() != ids.numel() or \
                    int(ids.min()) < 0 or int(ids.max()) >= self.vocab_size:
                raise ValueError(f"draft vocabulary: needs distinct ids in [0, "
                                 f"{self.vocab_size}), got {ids.numel()} ids")
            anchor = next(self.parameters(), self.lm_head)
            ids = ids if anchor is None else ids.to(anchor.device)
        self.draft_vocab = ids
        self._fused = None
        return self

    def _blocks(self, k: int) -> nn.Module:
        return self.heads[k] if self.shared_lm_head else self.heads[k][:-1]

    def _project(self, k: int, x: torch.Tensor, rows: Optional[torch.Tensor]) -> torch.Tensor:
        if self.shared_lm_head:
            if self.lm_head is None:
                raise RuntimeError("shared-lm_head Medusa heads need init_from_lm_head(base)")
            weight = self.lm_head
        else:
            weight = self.heads[k][-1].weight
        return x @ (weight if rows is None else weight[rows]).T

    def forward(self, hidden: torch.Tensor, rows: Optional[torch.Tensor] = None,
                root: Optional[torch.Tensor] = None, prev: Optional[torch.Tensor] = None
                ) -> torch.Tensor:
        """hidden [N, H] (post final-norm, as the lm_head sees it) -> logits [N, K, V].

        ``rows`` [V'] int64: logits of those vocabulary entries only ([N, K, V']), for a
        softmax restricted to a sub-vocabulary while training (``train.py``). ``root`` [N]
        int64: the token after each hidden state's position (needed by root_input heads).
        ``prev`` [N, K-1] int64: the token each head k >= 2 follows, given (teacher forcing;
        needed by chain_input heads).
        """
        x = self._with_root(hidden, root)
        logits = []
        for k in range(self.num_heads):
            prev_k = prev[:, k - 1] if prev is not None and k > 0 else None
            logits.append(self._project(k, self._blocks(k)(self._with_prev(k, x, prev_k)), rows))
        return torch.stack(logits, dim=1)

    @torch.no_grad()
    def fuse(self) -> "MedusaHeads":
        """Stack the K heads' weights for serving: one batched matmul per layer instead of K
        (a decode step is latency-bound on CPU). Call again after changing the weights."""
        blocks = [
            (torch.stack([h[j].linear.weight for h in self.heads]),  # [K, H, H] (out, in)
             torch.stack([h[j].linear.bias for h in self.heads]).unsqueeze(1))  # [K, 1, H]
            for j in range(self.num_layers)
        ]
        rows = self.draft_vocab
        if self.shared_lm_head:
            if rows is None:
                proj_t = self.lm_head.T  # [H, V] view: one matmul broadcast over the K heads
            else:  # [H, V'] contiguous: small-M matmuls read it fastest this way round
                proj_t = self.lm_head[rows].T.contiguous()
        else:
            proj = torch.stack([h[-1].weight for h in self.heads])  # [K, V, H]
            proj = proj if rows is None else proj[:, rows]  # [K, V', H]
            proj_t = proj.transpose(1, 2).contiguous()  # proj^T [K, H, V or V']
        self._fused = (blocks, proj_t)
        return self

    @torch.no_grad()
    def topk(self, hidden: torch.Tensor, k: int, root: Optional[torch.Tensor] = None,
             prev: Optional[torch.Tensor] = None) -> torch.Tensor:
        """[N, H] (+ root [N] for root_input heads) -> [N, K, k] int64 ranked candidate tokens
        per head (token ids, within the draft vocabulary when one is set). Chain_input heads
        follow ``prev`` when given (teacher forcing, to measure them), else each head follows
        the previous head's top-1 draft (serving)."""
        rows = self.draft_vocab
        if self.chain_input and prev is None:
            return self._chained_topk(self._with_root(hidden, root), k)
        if self._fused is None or prev is not None:
            ranked = self.forward(hidden, rows, root, prev).topk(k, dim=-1).indices  # [N,K,k]
            return ranked if rows is None else rows[ranked]
        blocks, proj_t = self._fused
        x = self._with_root(hidden, root).unsqueeze(0).expand(self.num_heads, -1, -1)  # [K,N,H]
        for w, b in blocks:
            x = x + torch.nn.functional.silu(torch.baddbmm(b, x, w.transpose(1, 2)))
        logits = torch.matmul(x, proj_t)  # [K, N, V or V']
        ranked = logits.topk(k, dim=-1).indices.transpose(0, 1)  # [N, K, k]
        return ranked if rows is None else rows[ranked]

    def _chained_topk(self, x: torch.Tensor, k: int) -> torch.Tensor:
        """Heads one after the other, each fed the top-1 draft of the one before: [N, K, k]."""
        rows, out, prev = self.draft_vocab, [], None
        for j in range(self.num_heads):
            ranked = self._head_logits(j, self._with_prev(j, x, prev)).topk(k, dim=-1).indices
            ranked = ranked if rows is None else rows[ranked]  # [N, k] token ids
            out.append(ranked)
            prev = ranked[:, 0]
        return torch.stack(out, dim=1)

    def _head_logits(self, j: int, z: torch.Tensor) -> torch.Tensor:
        """Head j on its input z [N, H] -> logits [N, V or V'] (the fused weights when made)."""
        if self._fused is None:
            return self._project(j, self._blocks(j)(z), self.draft_vocab)
        blocks, proj_t = self._fused
        for w, b in blocks:
            z = z + torch.nn.functional.silu(torch.addmm(b[j], z, w[j].T))
        return z @ (proj_t if proj_t.dim() == 2 else proj_t[j])

    # The reference checkpoints name the ModuleList's entries directly ("0.0.linear.weight");
    # these two keep that naming on disk while the module itself nests under ``heads``.
    def export_state_dict(self) -> dict[str, torch.Tensor]:
        return {k.removeprefix("heads."): v.detach().contiguous() for k, v in
                self.state_dict().items()}

    def import_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        top_level = ("root_proj.", "chain_proj.")  # the token projections sit beside ``heads``
        self.load_state_dict({k if k.startswith(top_level) else f"heads.{k}": v
                              for k, v in state.items()}, strict=True)
