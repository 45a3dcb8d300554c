"""A CPU attention path that honours Medusa's tree mask (pure torch).

SGLang's ``torch_native`` backend runs a TARGET_VERIFY forward as a causal extend, so each tree
node would also see its siblings and cousins. This backend is ``torch_native`` for everything
else and, for a MEDUSA verify forward, runs one masked SDPA per layer over the whole batch:

    keys of request b   = its cached prefix (req_to_token[b, :prefix_b]) ++ its n tree slots
    mask of request b   = [prefix_b x True | tree_mask]   (padded columns False)

Worked layout, bs = 2, n = 2 tree nodes (root, one child), prefixes 3 and 1 (Lmax = 3 + 2):
    kv_index[0] = [p0, p1, p2, t0, t1]       mask[0] = [[1,1,1,1,0], [1,1,1,1,1]]
    kv_index[1] = [q0, t0', t1', 0,  0 ]     mask[1] = [[1,1,0,0,0], [1,1,1,0,0]]
(slot 0 is SGLang's padding slot; it is always masked out). The index/mask tensors are built
once per forward in ``init_forward_metadata`` and reused by every layer.

Registered as ``medusa_tree`` (the cascade backend registers its own, distinct name).
"""

from __future__ import annotations

from typing import Optional

import torch
from sglang.srt.layers.attention.torch_native_backend import TorchNativeAttnBackend
from sglang.srt.mem_cache.memory_pool import KVWriteLoc
from torch.nn.functional import scaled_dot_product_attention


def is_medusa_verify(forward_batch) -> bool:
    from sglang_pr.medusa.spec_input import MedusaSpecInput

    return forward_batch.forward_mode.is_target_verify() and isinstance(
        forward_batch.spec_info, MedusaSpecInput
    )


def build_tree_kv_layout(
    req_to_token: torch.Tensor,
    req_pool_indices: torch.Tensor,
    prefix_lens: torch.Tensor,
    out_cache_loc: torch.Tensor,
    tree_mask: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-request KV slot indices and attention mask for a tree verify.

    Args:
        req_to_token: [max_reqs, max_ctx] int32/int64 SGLang's request -> KV slot table.
        req_pool_indices: [bs] rows of that table; prefix_lens: [bs] cached lengths.
        out_cache_loc: [bs * n] KV slots of the tree tokens (request-major).
        tree_mask: [n, n] bool.
    Returns:
        kv_index [bs, Lmax] int64 (0 where padded), mask [bs, n, Lmax] bool,
        Lmax = max(prefix) + n.
    """
    bs, n = prefix_lens.numel(), tree_mask.shape[0]
    device = tree_mask.device
    max_prefix = int(prefix_lens.max()) if bs else 0
    cols = torch.arange(max_prefix, device=device).view(1, -1)  # [1, P]
    in_prefix = cols < prefix_lens.view(-1, 1).to(device)  # [bs, P]
    prefix_idx = req_to_token[req_pool_indices.long(), :max_prefix].long()  # [bs, P]
    prefix_idx = torch.where(in_prefix, prefix_idx, torch.zeros_like(prefix_idx))
    tree_idx = out_cache_loc.view(bs, n).long()
    kv_index = torch.cat([prefix_idx, tree_idx], dim=1)  # [bs, P + n]
    mask = torch.cat(
        [in_prefix.unsqueeze(1).expand(bs, n, max_prefix), tree_mask.expand(bs, n, n)], dim=2
    )
    return kv_index, mask


class MedusaTreeAttnBackend(TorchNativeAttnBackend):
    """torch_native + a tree-masked TARGET_VERIFY for MEDUSA."""

    def __init__(self, model_runner):
        super().__init__(model_runner)
        self._tree_layout: Optional[tuple[torch.Tensor, torch.Tensor]] = None

    def init_forward_metadata(self, forward_batch):
        super().init_forward_metadata(forward_batch)
        self._tree_layout = None
        if is_medusa_verify(forward_batch):
            self._tree_layout = build_tree_kv_layout(
                self.req_to_token_pool.req_to_token,
                forward_batch.req_pool_indices,
                forward_batch.seq_lens,
                forward_batch.out_cache_loc,
                forward_batch.spec_info.tree_mask,
            )

    def forward_extend(self, q, k, v, layer, forward_batch, save_kv_cache=True):
        if self._tree_layout is None:  # set per batch by init_forward_metadata for a verify
            return super().forward_extend(q, k, v, layer, forward_batch, save_kv_cache)
        if save_kv_cache and k is not None and v is not None:
            self.token_to_kv_pool.set_kv_buffer(
                layer, KVWriteLoc(forward_batch.out_cache_loc, self.swa_out_cache_loc), k, v
            )
        kv_index, mask = self._tree_layout
        bs, n = mask.shape[0], mask.shape[1]
        hq, hk = layer.tp_q_head_num, layer.tp_k_head_num
        d, dv = layer.qk_head_dim, layer.v_head_dim
        q_ = q.reshape(bs, n, hq, d).transpose(1, 2)  # [bs, Hq, n, D]
        k_cache = self.token_to_kv_pool.get_key_buffer(layer.layer_id)
        v_cache = self.token_to_kv_pool.get_value_buffer(layer.layer_id)
        keys = k_cache[kv_index].transpose(1, 2).to(q_.dtype)  # [bs, Hk, L, D]
        values = v_cache[kv_index].transpose(1, 2).to(q_.dtype)  # [bs, Hk, L, Dv]
        out = scaled_dot_product_attention(
            q_, keys, values, attn_mask=mask.unsqueeze(1), scale=layer.scaling,
            enable_gqa=hq != hk,
        )  # [bs, Hq, n, Dv]
        return out.transpose(1, 2).reshape(bs * n, hq * dv)
