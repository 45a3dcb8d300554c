"""Two CPU stand-ins SGLang's speculative (V2) machinery needs on the portable CPU platform.

SGLang runs these steps with Triton kernels unless its own CPU engine (sgl-kernel's CPU build,
``SGLANG_USE_CPU_ENGINE``) is active; the portable CPU platform has neither Triton nor that
build. Each hook (HookRegistry AROUND) is a pass-through unless the tensors live on the CPU:

- ``allocation.assign_req_to_token_pool_func``: writes the KV slots SGLang reserves for a
  speculative decode step into req_to_token (row b, columns start_b .. end_b - 1);
- ``MHATokenToKVPool._init_kv_copy_and_warmup``: sets up (and warms up) the Triton KV copy
  used by ``move_kv_cache``; on CPU the pool is switched to SGLang's own native move instead.

The hook rows are in ``sglang_pr.cpu_platform.HOOKS``.
"""

from __future__ import annotations


def assign_req_to_token_torch(req_pool_indices, req_to_token, start_offset, end_offset,
                              out_cache_loc) -> None:
    """req_to_token[row_b, start_b:end_b] = the next (end_b - start_b) entries of out_cache_loc.

    Example: rows [3, 5], starts [10, 4], ends [12, 5], out_cache_loc [7, 8, 9] ->
    req_to_token[3, 10:12] = [7, 8], req_to_token[5, 4:5] = [9].
    """
    pos = 0
    for row, s, e in zip(req_pool_indices.tolist(), start_offset.tolist(), end_offset.tolist()):
        req_to_token[row, s:e] = out_cache_loc[pos : pos + e - s].to(req_to_token.dtype)
        pos += e - s


def _assign_around(original, req_pool_indices, req_to_token, start_offset, end_offset,
                   out_cache_loc, batch_size):
    from sglang.srt.mem_cache import allocation

    if req_to_token.device.type != "cpu" or getattr(allocation, "_is_cpu", False):
        return original(req_pool_indices, req_to_token, start_offset, end_offset,
                        out_cache_loc, batch_size)
    assign_req_to_token_torch(req_pool_indices, req_to_token, start_offset, end_offset,
                              out_cache_loc)


def _kv_copy_around(original, self, *args, **kwargs):
    if str(self.device) != "cpu":
        return original(self, *args, **kwargs)
    self._kv_copy_config = None
    self.use_native_move_kv_cache = True  # SGLang's torch indexing move (move_kv_cache_native)
