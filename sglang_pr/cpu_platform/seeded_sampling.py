"""Opt-in per-request seeded sampling on servers that cannot run SGLang's deterministic mode.

SGLang honours ``sampling_params.sampling_seed`` only under ``--enable-deterministic-inference``,
which requires a deterministic GPU attention backend (flashinfer/fa3/triton) and so refuses the
CPU's torch_native backend. Its sampler, however, samples with the seed whenever
``SamplingBatchInfo.sampling_seed`` is set (Gumbel noise hashed from seed and position,
``multinomial_with_seed``). With ``SGLANG_PR_SEEDED_SAMPLING=1`` in the server's environment,
this hook fills that tensor, so "same seed, same text" can be checked on any machine — the
runtime tests use it to show that DeepConf tracking with threshold −inf leaves sampling
untouched. A request without a seed gets a random one (drawn once per request), so unseeded
requests — fork branches, for one — still sample independently (SGLang's deterministic mode
gives them all seed 42 instead, which would make every branch of a fork identical).

On a CPU, SGLang's seeded sampler hashes with a compiled sgl-kernel op that PyPI's wheel does
not ship for CPUs; :func:`cpu_multinomial_with_seed` is the same algorithm (32-bit MurmurHash3 of
seed, position and column -> uniform -> Gumbel noise -> argmax) in eager torch, used for CPU
tensors only.

Off by default: without the variable nothing changes.
"""

from __future__ import annotations

import random

import torch

from sglang_pr.cpu_platform import SEEDED_SAMPLING_ENV
from sglang_pr.internals import env_on

ENV = SEEDED_SAMPLING_ENV  # the env of its rows in cpu_platform.HOOKS
SEED_ATTR = "_sglang_pr_seed"  # a request's drawn seed, kept across re-prefills


def enabled() -> bool:
    return env_on(ENV)


def _after_from_schedule_batch(result, cls, batch, *args, **kwargs) -> None:
    if result.sampling_seed is not None or not batch.reqs:
        return
    result.sampling_seed = torch.tensor(  # [B] int64, one seed per request row
        [_seed_of(r) for r in batch.reqs], dtype=torch.int64
    ).to(batch.device, non_blocking=True)


def _seed_of(req) -> int:
    seed = req.sampling_params.sampling_seed
    if seed is not None:
        return int(seed)
    drawn = getattr(req, SEED_ATTR, None)
    if drawn is None:
        drawn = random.getrandbits(62)
        setattr(req, SEED_ATTR, drawn)
    return drawn


_M32 = 0xFFFFFFFF


def _rotl32(x: torch.Tensor, r: int) -> torch.Tensor:
    return ((x << r) | (x >> (32 - r))) & _M32


def _mix(h: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    # int64 products of two 32-bit values wrap modulo 2**64; their low 32 bits stay exact.
    k = _rotl32((k * 0xCC9E2D51) & _M32, 15)
    k = (k * 0x1B873593) & _M32
    h = _rotl32(h ^ k, 13)
    return (h * 5 + 0xE6546B64) & _M32


def _fmix32(h: torch.Tensor) -> torch.Tensor:
    h = h ^ (h >> 16)
    h = (h * 0x85EBCA6B) & _M32
    h = h ^ (h >> 13)
    h = (h * 0xC2B2AE35) & _M32
    return h ^ (h >> 16)


def murmur_hash32_torch(seed: torch.Tensor, positions: torch.Tensor, n_cols: int) -> torch.Tensor:
    """[n] seeds, [n] positions -> [n, n_cols] int64 hashes in [0, 2**32) (MurmurHash3, 16 bytes)."""
    seed = seed.to(torch.int64).view(-1, 1)
    h = torch.zeros_like(seed)
    h = _mix(h, seed & _M32)
    h = _mix(h, (seed >> 32) & _M32)
    h = _mix(h, positions.to(torch.int64).view(-1, 1) & _M32)
    cols = torch.arange(n_cols, dtype=torch.int64, device=seed.device).view(1, -1)
    return _fmix32(_mix(h, cols) ^ 16)


def cpu_multinomial_with_seed(logprobs: torch.Tensor, seed: torch.Tensor,
                              positions: torch.Tensor) -> torch.Tensor:
    """Gumbel-max sample per row from [n, m] log-weights with per-row seeds -> [n, 1] int64."""
    x = murmur_hash32_torch(seed, positions, logprobs.shape[1]).to(torch.float64) / _M32
    x = x.clamp(min=torch.finfo(torch.float64).tiny, max=1.0 - 2.0**-32)
    gumbel = -torch.log(-torch.log(x))
    return torch.argmax(gumbel + logprobs.to(torch.float64), dim=1, keepdim=True)


def multinomial_with_seed(logprobs: torch.Tensor, seed: torch.Tensor,
                          positions: torch.Tensor) -> torch.Tensor:
    """SGLang's seeded sampler on any device: the eager twin on CPU, SGLang's own elsewhere."""
    if logprobs.device.type == "cpu":
        return cpu_multinomial_with_seed(logprobs, seed, positions)
    from sglang.srt.layers import sampler

    return sampler.multinomial_with_seed(logprobs, seed, positions)


def _around_multinomial_with_seed(original, logprobs, seed, positions):
    if logprobs.device.type == "cpu":
        return cpu_multinomial_with_seed(logprobs, seed, positions)
    return original(logprobs, seed, positions)
