"""SGLang attention backend ``cascade``: shared-prefix (cascade) attention at decode.

Extend and mixed batches (prefill, possibly over a cached prefix) go through :mod:`.extend`
(``CascadeConfig.extend``, on by default): only the new tokens are queried, over their cached
prefix plus themselves (causal), and a prefix shared by several requests of the batch (the
branches of a fork) is attended once for all of them and merged by log-sum-exp. SGLang's
torch_native extend instead queries every cached position again. Every other mode (speculative
verify, draft extends, encoder models, sliding-window layers) is torch_native's, unchanged.
The extend path is pure torch (``sglang_pr.kernels.extend``) on every device: on a GPU the
``kernel`` setting picks the decode kernels only. At decode:

1. ``init_forward_metadata`` (once per batch) builds a :class:`~.plan.CascadePlan` from the
   batch's ``req_to_token`` rows: which requests share which KV spans, under the cost rule of
   :class:`~.config.CascadeConfig`; it is rebuilt every batch, so groups that shrink (early
   stops, aborts) or grow (newcomers) need no bookkeeping.
2. ``forward_decode`` (per layer) writes the new K/V like torch_native, then runs each shared
   span once per group (all members' queries in one pass, keeping the LSE), each request's own
   suffix with its LSE, and merges them exactly (natural-log LSE, see ``sglang_pr.kernels``).

Rows in no group are attended flat: by torch_native's own decode on the CPU path, and as a
whole-sequence suffix by the Triton kernel on the GPU path.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field

import torch
from sglang.srt.layers.attention.torch_native_backend import TorchNativeAttnBackend
from sglang.srt.layers.radix_attention import AttentionType
from sglang.srt.mem_cache.memory_pool import KVWriteLoc
from sglang.srt.model_executor.forward_batch_info import ForwardMode

from sglang_pr.internals import run_sdpa_forward_decode
from sglang_pr.kernels import CascadeDecode, WorkList, resolve_impl
from sglang_pr.runtime_defaults import NO_CUDA_GRAPH_FLAGS, flags_argv

from .config import BACKEND_NAME, CascadeConfig
from .extend import ExtendState, plan_extend
from .plan import CascadePlan, build_plan

logger = logging.getLogger(__name__)


@dataclass
class CascadeStats:
    """Counters since start-up (KV tokens are per layer, summed over decode batches)."""

    decode_batches: int = 0
    cascade_batches: int = 0
    kv_tokens_flat: int = 0
    kv_tokens_read: int = 0
    mixed_batches: int = 0  # cascade batches that also had rows in no group (flat rows)
    max_levels: int = 0
    last_groups: list[int] = field(default_factory=list)  # level-0 group sizes, last batch
    group_sizes_seen: list[int] = field(default_factory=list)  # distinct level-0 group sizes
    # Extend batches through the backend's own path (new tokens only); "grouped": those where
    # a shared prefix was attended once for several requests.
    extend_batches: int = 0
    extend_grouped_batches: int = 0
    extend_groups_seen: list[int] = field(default_factory=list)  # distinct level-0 group sizes


@dataclass
class _DecodeState:
    plan: CascadePlan
    levels: list[WorkList]
    impl: str
    grouped: torch.Tensor | None  # [Bg] rows the cascade outputs; None = all rows
    flat: torch.Tensor | None  # [Bf] rows done by torch_native flat decode; None = none
    # Per batch, not per layer: the flat rows' request-pool indices and lengths ([Bf] each).
    flat_req_pool_indices: torch.Tensor | None = None
    flat_seq_lens: torch.Tensor | None = None
    kernels: dict = field(default_factory=dict)  # (Hkv, gqa) -> CascadeDecode

    def kernel(self, num_kv_heads: int, gqa: int) -> CascadeDecode:
        key = (num_kv_heads, gqa)
        if key not in self.kernels:
            self.kernels[key] = CascadeDecode(self.levels, num_kv_heads, gqa, self.impl)
        return self.kernels[key]


class CascadeAttnBackend(TorchNativeAttnBackend):
    """torch_native for prefill; grouped (cascade) decode with an exact LSE merge."""

    def __init__(self, model_runner, cfg: CascadeConfig):
        super().__init__(model_runner)
        self.cfg = cfg
        self.stats = CascadeStats()
        self._state: _DecodeState | None = None
        self._extend: ExtendState | None = None
        # The SWA pool translates slots per layer kind; grouping by raw slots would be wrong.
        self._off_reason = "sliding-window KV pool" if self.use_sliding_window_kv_pool else None
        logger.info(
            "%s attention backend: %s (kernel=%s)", BACKEND_NAME,
            self._off_reason and f"grouping off ({self._off_reason})" or "grouping on",
            resolve_impl(cfg.kernel, torch.device(self.device)),
        )

    def init_cuda_graph_state(self, max_bs: int, max_num_tokens: int):
        raise RuntimeError(
            f"the {BACKEND_NAME} attention backend plans every decode batch on the host and "
            "cannot be captured in a CUDA graph: start the server with "
            + " ".join(flags_argv(NO_CUDA_GRAPH_FLAGS))
        )

    def init_forward_metadata(self, forward_batch):
        super().init_forward_metadata(forward_batch)
        self._state = None
        self._extend = None
        if self._takes_extend(forward_batch):
            self._extend = self._plan_extend(forward_batch)
        if (
            self._off_reason is None
            and forward_batch.forward_mode.is_decode()
            and forward_batch.encoder_lens is None
            and forward_batch.batch_size >= self.cfg.min_group_size
        ):
            self._state = self._plan(forward_batch)
        elif forward_batch.forward_mode.is_decode():
            self._count(None, forward_batch)

    def _plan(self, forward_batch) -> _DecodeState | None:
        seq_lens_cpu = forward_batch.seq_lens_cpu
        if seq_lens_cpu is None:
            seq_lens_cpu = forward_batch.seq_lens.cpu()
        plan = build_plan(
            self.req_to_token_pool.req_to_token,
            forward_batch.req_pool_indices,
            seq_lens_cpu.tolist(),
            self.cfg,
        )
        self._count(plan, forward_batch)
        if not plan.segments:
            return None
        device = forward_batch.seq_lens.device
        impl = resolve_impl(self.cfg.kernel, device)
        grouped, flat = plan.grouped_rows, plan.flat_rows
        if impl == "triton" or not flat:
            # The kernel covers every row (on Triton, ungrouped rows are whole-sequence suffix
            # items), so its output is the layer's output as it is.
            return _DecodeState(plan, plan.worklists(), impl, None, None)
        flat_t = torch.tensor(flat, dtype=torch.int64, device=device)
        return _DecodeState(
            plan,
            plan.worklists(grouped),
            impl,
            torch.tensor(grouped, dtype=torch.int64, device=device),
            flat_t,
            forward_batch.req_pool_indices[flat_t],
            forward_batch.seq_lens[flat_t],
        )

    def _count(self, plan: CascadePlan | None, forward_batch) -> None:
        st = self.stats
        st.decode_batches += 1
        if plan is None:
            n = int(forward_batch.seq_lens_sum or 0)
            st.kv_tokens_flat += n
            st.kv_tokens_read += n
            st.last_groups = []
        else:
            flat, read = plan.kv_tokens()
            st.kv_tokens_flat += flat
            st.kv_tokens_read += read
            st.cascade_batches += bool(plan.segments)
            st.mixed_batches += bool(plan.segments) and bool(plan.flat_rows)
            st.max_levels = max(st.max_levels, plan.num_levels)
            st.last_groups = [len(s.rows) for s in plan.segments if s.level == 0]
            st.group_sizes_seen = sorted(set(st.group_sizes_seen) | set(st.last_groups))
        self._write_stats()

    def _write_stats(self) -> None:
        if self.cfg.stats_path:
            st = self.stats
            tmp = f"{self.cfg.stats_path}.tmp{os.getpid()}"
            with open(tmp, "w") as f:
                json.dump(st.__dict__, f)
            os.replace(tmp, self.cfg.stats_path)  # readers never see a half-written file

    def _takes_extend(self, forward_batch) -> bool:
        """Plain extend / mixed batches of a decoder-only model; not verify or draft modes."""
        return (
            self.cfg.extend
            and self._off_reason is None
            and forward_batch.forward_mode in (ForwardMode.EXTEND, ForwardMode.MIXED)
            and forward_batch.encoder_lens is None
            and forward_batch.extend_prefix_lens_cpu is not None
            and forward_batch.extend_seq_lens_cpu is not None
        )

    def _plan_extend(self, forward_batch) -> ExtendState:
        ext = plan_extend(
            self.req_to_token_pool.req_to_token,
            forward_batch.req_pool_indices,
            list(forward_batch.extend_prefix_lens_cpu),
            list(forward_batch.extend_seq_lens_cpu),
            self.cfg,
        )
        st = self.stats
        st.extend_batches += 1
        st.extend_grouped_batches += bool(ext.plan.segments)
        st.extend_groups_seen = sorted(set(st.extend_groups_seen) | set(ext.groups))
        self._write_stats()
        return ext

    def forward_extend(self, q, k, v, layer, forward_batch, save_kv_cache=True, **kwargs):
        ext = self._extend
        if (
            ext is None
            or layer.is_cross_attention
            or layer.attn_type == AttentionType.ENCODER_ONLY
            or (layer.sliding_window_size is not None and layer.sliding_window_size > -1)
        ):
            return super().forward_extend(q, k, v, layer, forward_batch, save_kv_cache)
        Hq = layer.tp_q_head_num
        if save_kv_cache and k is not None and v is not None:
            self.token_to_kv_pool.set_kv_buffer(
                layer, KVWriteLoc(forward_batch.out_cache_loc, self.swa_out_cache_loc), k, v
            )
        q_ = q.reshape(-1, Hq, layer.qk_head_dim)  # [T, Hq, D]: the new tokens only
        o = ext.kernel.run(
            q_,
            self.token_to_kv_pool.get_key_buffer(layer.layer_id),
            self.token_to_kv_pool.get_value_buffer(layer.layer_id),
            layer.scaling,
        )  # [T, Hq, Dv] float32
        return o.to(q.dtype).reshape(q_.shape[0], Hq * layer.v_head_dim)

    def forward_decode(self, q, k, v, layer, forward_batch, save_kv_cache=True, **kwargs):
        st = self._state
        if (
            st is None
            or layer.is_cross_attention
            or (layer.sliding_window_size is not None and layer.sliding_window_size > -1)
        ):
            return super().forward_decode(q, k, v, layer, forward_batch, save_kv_cache)
        Hq, Hkv = layer.tp_q_head_num, layer.tp_k_head_num
        q = q.reshape(-1, Hq * layer.qk_head_dim)
        if save_kv_cache and k is not None and v is not None:
            self.token_to_kv_pool.set_kv_buffer(
                layer, KVWriteLoc(forward_batch.out_cache_loc, self.swa_out_cache_loc), k, v
            )
        q_ = q.view(-1, Hq, layer.qk_head_dim)
        k_cache = self.token_to_kv_pool.get_key_buffer(layer.layer_id)
        v_cache = self.token_to_kv_pool.get_value_buffer(layer.layer_id)
        o_casc, _ = st.kernel(Hkv, Hq // Hkv).run(q_, k_cache, v_cache, layer.scaling)
        if st.grouped is None:
            return o_casc.to(q.dtype).reshape(q.shape[0], Hq * layer.v_head_dim)
        o = q.new_empty((q.shape[0], Hq, layer.v_head_dim))
        o[st.grouped] = o_casc[st.grouped].to(q.dtype)
        o[st.flat] = self._flat_rows(q_, k_cache, v_cache, layer, st)
        return o.view(q.shape[0], Hq * layer.v_head_dim)

    def _flat_rows(self, q_, k_cache, v_cache, layer, st: _DecodeState):
        """torch_native's own decode for the rows in no group. Returns ``[Bf, Hq, Dv]``."""
        out = q_.new_empty((st.flat.numel(), layer.tp_q_head_num, layer.v_head_dim))
        run_sdpa_forward_decode(
            self,
            q_[st.flat],
            out,
            k_cache,
            v_cache,
            self.req_to_token_pool.req_to_token,
            st.flat_req_pool_indices,
            st.flat_seq_lens,
            None,
            scaling=layer.scaling,
            enable_gqa=layer.tp_q_head_num != layer.tp_k_head_num,
            causal=False,
        )
        return out
