"""The cascade backend against SGLang's torch_native backend, on SGLang's real KV pools.

A small decode "server" in-process: SGLang's ReqToTokenPool and MHATokenToKVPool, a real
RadixAttention layer and real ForwardBatch objects; requests are forked, grow token by token,
stop early and join, and every decode step's attention output is compared with torch_native's.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from sglang.srt.layers.attention.torch_native_backend import TorchNativeAttnBackend
from sglang.srt.layers.radix_attention import RadixAttention
from sglang.srt.mem_cache.memory_pool import MHATokenToKVPool, ReqToTokenPool
from sglang.srt.model_executor.forward_batch_info import ForwardBatch, ForwardMode

from sglang_pr.cascade.backend import CascadeAttnBackend
from sglang_pr.cascade.config import CascadeConfig

TOL = 1e-5


class MiniDecodeWorld:
    """Requests as req_to_token rows over a paged slot allocator; one attention layer."""

    def __init__(self, hq=8, hkv=2, d=32, page_size=1, slots=16384, device="cpu", seed=0):
        self.gen = torch.Generator().manual_seed(seed)
        self.page_size, self.device, self.shape = page_size, device, (hq, hkv, d)
        self.req_pool = ReqToTokenPool(size=64, max_context_len=4096, device=device,
                                       enable_memory_saver=False)
        self.kv_pool = MHATokenToKVPool(size=slots, page_size=page_size, dtype=torch.float32,
                                        head_num=hkv, head_dim=d, layer_num=1, device=device,
                                        enable_memory_saver=False, enable_alt_stream=False)
        for buf in (self.kv_pool.get_key_buffer(0), self.kv_pool.get_value_buffer(0)):
            buf.copy_(torch.randn(buf.shape, generator=self.gen))
        self.free_pages = torch.randperm(slots // page_size - 1, generator=self.gen).add(1).tolist()
        self.layer = RadixAttention(num_heads=hq, head_dim=d, scaling=d**-0.5, num_kv_heads=hkv,
                                    layer_id=0)
        self.runner = SimpleNamespace(device=device, req_to_token_pool=self.req_pool,
                                      token_to_kv_pool=self.kv_pool)
        self.lens: dict[int, int] = {}  # pool row -> tokens
        self.tail: dict[int, list[int]] = {}  # pool row -> free slots left on its last page
        self.next_row = 1

    def _slots(self, row: int, n: int) -> list[int]:
        out = []
        while len(out) < n:
            if not self.tail.get(row):
                base = self.free_pages.pop() * self.page_size
                self.tail[row] = list(range(base, base + self.page_size))
            out.append(self.tail[row].pop(0))
        return out

    def new_request(self, length: int, fork_of: int | None = None, shared: int = 0) -> int:
        """A request of ``length`` tokens; its first ``shared`` slots are ``fork_of``'s."""
        row, self.next_row = self.next_row, self.next_row + 1
        rt = self.req_pool.req_to_token
        if fork_of is not None:
            rt[row, :shared] = rt[fork_of, :shared]
        # Own tokens start on a fresh page, as SGLang's paged radix cache shares whole pages.
        rt[row, shared:length] = torch.tensor(self._slots(row, length - shared), dtype=torch.int32)
        self.lens[row] = length
        return row

    def decode_batch(self, rows: list[int]) -> ForwardBatch:
        """Append one token to each row (its new slot is out_cache_loc) and build the batch."""
        locs = []
        for r in rows:
            slot = self._slots(r, 1)[0]
            self.req_pool.req_to_token[r, self.lens[r]] = slot
            self.lens[r] += 1
            locs.append(slot)
        seq = torch.tensor([self.lens[r] for r in rows], dtype=torch.int64)
        return ForwardBatch(
            forward_mode=ForwardMode.DECODE, batch_size=len(rows),
            input_ids=torch.zeros(len(rows), dtype=torch.int64),
            req_pool_indices=torch.tensor(rows, dtype=torch.int64),
            seq_lens=seq.to(self.device), out_cache_loc=torch.tensor(locs, dtype=torch.int64),
            seq_lens_sum=int(seq.sum()), seq_lens_cpu=seq,
        )

    def extend_batch(self, rows: list[int], new: list[int]) -> ForwardBatch:
        """Append ``new[i]`` tokens to row ``rows[i]`` in one extend batch (prefix = its length)."""
        locs, prefix = [], [self.lens[r] for r in rows]
        for r, e in zip(rows, new):
            slots = self._slots(r, e)
            self.req_pool.req_to_token[r, self.lens[r] : self.lens[r] + e] = torch.tensor(slots)
            self.lens[r] += e
            locs += slots
        seq = torch.tensor([self.lens[r] for r in rows], dtype=torch.int64)
        i32 = lambda x: torch.tensor(x, dtype=torch.int32, device=self.device)  # noqa: E731
        return ForwardBatch(
            forward_mode=ForwardMode.EXTEND, batch_size=len(rows),
            input_ids=torch.zeros(sum(new), dtype=torch.int64),
            req_pool_indices=torch.tensor(rows, dtype=torch.int64, device=self.device),
            seq_lens=seq.to(self.device), seq_lens_cpu=seq, seq_lens_sum=int(seq.sum()),
            out_cache_loc=torch.tensor(locs, dtype=torch.int64, device=self.device),
            extend_prefix_lens=i32(prefix), extend_seq_lens=i32(new),
            extend_prefix_lens_cpu=prefix, extend_seq_lens_cpu=list(new),
        )

    def qkv(self, b: int):
        hq, hkv, d = self.shape
        mk = lambda *s: torch.randn(s, generator=self.gen).to(self.device)  # noqa: E731
        return mk(b, hq * d), mk(b, hkv, d), mk(b, hkv, d)


def _compare(world: MiniDecodeWorld, casc: CascadeAttnBackend, rows: list[int]):
    """One decode step through both backends; returns the cascade plan used (or None)."""
    flat = TorchNativeAttnBackend(world.runner)
    fb = world.decode_batch(rows)
    q, k, v = world.qkv(len(rows))
    casc.init_forward_metadata(fb)
    flat.init_forward_metadata(fb)
    o_c = casc.forward(q, k, v, world.layer, fb)
    o_f = flat.forward(q, k, v, world.layer, fb)
    assert o_c.shape == o_f.shape
    assert (o_c - o_f).abs().max().item() <= TOL
    return casc._state.plan if casc._state is not None else None


def _compare_extend(world: MiniDecodeWorld, casc: CascadeAttnBackend, rows, new):
    """One extend batch through both backends (each writes the same K/V to the pool)."""
    flat = TorchNativeAttnBackend(world.runner)
    fb = world.extend_batch(rows, new)
    q, k, v = world.qkv(sum(new))
    casc.init_forward_metadata(fb)
    flat.init_forward_metadata(fb)
    o_c = casc.forward(q, k, v, world.layer, fb)
    o_f = flat.forward(q, k, v, world.layer, fb)
    assert o_c.shape == o_f.shape
    assert (o_c - o_f).abs().max().item() <= TOL
    return casc._extend


def _fork(world, n, prompt_len, gen_before=0):
    root = world.new_request(prompt_len)
    return [world.new_request(prompt_len + gen_before, fork_of=root, shared=prompt_len)
            for _ in range(n)]


@pytest.mark.parametrize("page_size", [1, 16])
@pytest.mark.parametrize("hq,hkv", [(8, 2), (4, 4), (8, 1)])
def test_16_way_fork_matches_torch_native(page_size, hq, hkv):
    world = MiniDecodeWorld(hq=hq, hkv=hkv, page_size=page_size)
    casc = CascadeAttnBackend(world.runner, CascadeConfig(min_prefix_tokens=32))
    rows = _fork(world, 16, prompt_len=320, gen_before=3)
    for _ in range(3):
        plan = _compare(world, casc, rows)
        assert plan is not None and [len(s.rows) for s in plan.segments] == [16]
        assert plan.segments[0].end == 320  # exactly the prompt, never a branch's own token
    flat_tokens, read = plan.kv_tokens()
    assert read < flat_tokens / 8  # 16 x (320 + 6) tokens flat vs 320 + 16 x 6


def test_mixed_batch_of_groups_and_unrelated_requests():
    world = MiniDecodeWorld(page_size=4)
    casc = CascadeAttnBackend(world.runner, CascadeConfig(min_prefix_tokens=16))
    a = _fork(world, 5, prompt_len=100, gen_before=2)
    b = _fork(world, 3, prompt_len=40)
    loners = [world.new_request(90), world.new_request(7)]
    batch = [a[0], loners[0], b[0], a[1], b[1], a[2], loners[1], a[3], b[2], a[4]]
    plan = _compare(world, casc, batch)
    assert sorted(len(s.rows) for s in plan.segments) == [3, 5]
    assert sorted(plan.flat_rows) == [batch.index(loners[0]), batch.index(loners[1])]


def test_group_that_shrinks_and_gains_members_mid_decode():
    world = MiniDecodeWorld(page_size=1)
    casc = CascadeAttnBackend(world.runner, CascadeConfig(min_prefix_tokens=32, min_group_size=2))
    rows = _fork(world, 16, prompt_len=200)
    other = world.new_request(150)
    sizes = []
    for step in range(6):
        if step == 2:
            rows = rows[:9]  # 7 branches stopped early (DeepConf) or were aborted
        if step == 3:
            rows = rows + [world.new_request(201, fork_of=rows[0], shared=200)]  # a late fork
        if step == 4:
            rows = rows[:1]  # a single survivor: no group left, flat attention
        plan = _compare(world, casc, rows + [other])
        sizes.append([len(s.rows) for s in plan.segments] if plan else [])
    assert sizes == [[16], [16], [9], [10], [], []]


def test_nested_forks_make_two_levels():
    world = MiniDecodeWorld(page_size=1)
    casc = CascadeAttnBackend(world.runner, CascadeConfig(min_prefix_tokens=32))
    system = world.new_request(128)  # a shared system prompt ...
    q1 = world.new_request(128 + 64, fork_of=system, shared=128)  # ... then two questions
    q2 = world.new_request(128 + 80, fork_of=system, shared=128)
    br1 = [world.new_request(192 + 1, fork_of=q1, shared=192) for _ in range(4)]
    br2 = [world.new_request(208 + 1, fork_of=q2, shared=208) for _ in range(3)]
    plan = _compare(world, casc, br1 + br2)
    assert plan.num_levels == 2
    spans = sorted((s.level, len(s.rows), s.start, s.end) for s in plan.segments)
    assert spans == [(0, 7, 0, 128), (1, 3, 128, 208), (1, 4, 128, 192)]


def test_cost_rule_falls_back_to_flat():
    world = MiniDecodeWorld(page_size=1)
    casc = CascadeAttnBackend(world.runner, CascadeConfig(min_prefix_tokens=64, min_group_size=3))
    short = _fork(world, 8, prompt_len=40)  # prefix too short
    pair = _fork(world, 2, prompt_len=300)  # group too small
    assert _compare(world, casc, short + pair) is None
    assert casc.stats.decode_batches == 1 and casc.stats.cascade_batches == 0
    assert casc.stats.kv_tokens_read == casc.stats.kv_tokens_flat


def test_stats_file_is_written(tmp_path):
    world = MiniDecodeWorld(page_size=1)
    path = tmp_path / "stats.json"
    casc = CascadeAttnBackend(world.runner, CascadeConfig(min_prefix_tokens=8,
                                                          stats_path=str(path)))
    _compare(world, casc, _fork(world, 4, prompt_len=50))
    import json

    stats = json.loads(path.read_text())
    assert stats["cascade_batches"] == 1 and stats["last_groups"] == [4]
    assert stats["kv_tokens_read"] == 50 + 4 * 1 < stats["kv_tokens_flat"] == 4 * 51


def test_cuda_graph_capture_is_refused_with_a_clear_message():
    world = MiniDecodeWorld()
    casc = CascadeAttnBackend(world.runner, CascadeConfig())
    with pytest.raises(RuntimeError, match="--cuda-graph-backend-decode disabled"):
        casc.init_cuda_graph_state(8, 8)


@pytest.mark.parametrize("page_size", [1, 16])
@pytest.mark.parametrize("hq,hkv", [(9, 3), (4, 4)])
def test_extend_of_a_16_way_fork_over_a_cached_prompt(page_size, hq, hkv):
    # The fork's first step: each branch extends one token over the cached prompt.
    world = MiniDecodeWorld(hq=hq, hkv=hkv, page_size=page_size)
    casc = CascadeAttnBackend(world.runner, CascadeConfig(min_prefix_tokens=32))
    rows = _fork(world, 16, prompt_len=320)
    ext = _compare_extend(world, casc, rows, [1] * 16)
    assert ext is not None and ext.groups == [16]
    assert casc.stats.extend_grouped_batches == 1
    plan = _compare(world, casc, rows)  # decode then reads the K/V the extend wrote
    assert [len(s.rows) for s in plan.segments] == [16]


def test_extend_batch_with_ragged_prefixes_prefill_and_loners():
    world = MiniDecodeWorld(page_size=4)
    casc = CascadeAttnBackend(world.runner, CascadeConfig(min_prefix_tokens=16))
    a = _fork(world, 4, prompt_len=100, gen_before=5)  # branches 105 tokens, 100 shared
    loner = world.new_request(60)
    fresh = world.new_request(0)  # prefix 0: a plain prefill
    rows = a + [loner, fresh]
    ext = _compare_extend(world, casc, rows, [1, 7, 1, 3, 5, 40])
    assert ext.groups == [4] and ext.plan.suffix_start == [100] * 4 + [0, 0]
    _compare_extend(world, casc, [fresh, a[0]], [1, 2])  # no group: every request alone


def test_extend_path_off_is_torch_native():
    world = MiniDecodeWorld(page_size=1)
    casc = CascadeAttnBackend(world.runner, CascadeConfig(min_prefix_tokens=16, extend=False))
    assert _compare_extend(world, casc, _fork(world, 4, prompt_len=64), [1] * 4) is None
    assert casc.stats.extend_batches == 0


@pytest.mark.gpu
def test_triton_path_matches_torch_native_on_gpu():
    world = MiniDecodeWorld(page_size=16, device="cuda")
    casc = CascadeAttnBackend(world.runner, CascadeConfig(min_prefix_tokens=32, kernel="triton"))
    rows = _fork(world, 16, prompt_len=1000) + [world.new_request(77)]
    for _ in range(2):
        plan = _compare(world, casc, rows)
        assert plan is not None
