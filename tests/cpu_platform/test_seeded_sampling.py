"""The CPU seeded sampler: deterministic per (seed, position), distributed like the weights."""

import os
import subprocess
import sys

import torch

from sglang_pr.cpu_platform.seeded_sampling import cpu_multinomial_with_seed, murmur_hash32_torch


def test_hash_is_deterministic_and_spread():
    a = murmur_hash32_torch(torch.tensor([1, 2]), torch.tensor([5, 5]), 1000)
    b = murmur_hash32_torch(torch.tensor([1, 2]), torch.tensor([5, 5]), 1000)
    assert torch.equal(a, b) and not torch.equal(a[0], a[1])
    assert a.min() >= 0 and a.max() < 2**32
    assert a.unique().numel() > 1990  # no collisions to speak of


def test_same_seed_and_position_same_sample():
    lp = torch.log_softmax(torch.randn(3, 20), -1)
    s, pos = torch.tensor([4, 4, 9]), torch.tensor([7, 7, 7])
    out = cpu_multinomial_with_seed(lp[[0, 0, 0]], s, pos)
    assert out[0] == out[1]


def test_samples_follow_the_distribution():
    probs = torch.tensor([0.5, 0.3, 0.15, 0.05])
    lp = probs.log().expand(4000, 4)
    idx = cpu_multinomial_with_seed(lp, torch.full((4000,), 11), torch.arange(4000))
    freq = torch.bincount(idx.view(-1), minlength=4).float() / 4000
    assert (freq - probs).abs().max() < 0.03


_SGLANG_HASH = """
import torch, triton
from sglang.kernels.ops.sampling.murmur_hash import murmur_hash32_kernel
from sglang_pr.cpu_platform.seeded_sampling import murmur_hash32_torch
seed = torch.tensor([0, 1, 42, 2**40 + 7, -3])
pos = torch.tensor([0, 5, 17, 1000, 3])
out = torch.empty((5, 300), dtype=torch.uint32)
murmur_hash32_kernel[(5, 1)](seed.to(torch.uint64), pos, torch.arange(300), out, 5, 300,
                             BLOCK_SIZE=1024)
assert torch.equal(out.to(torch.int64), murmur_hash32_torch(seed, pos, 300)), "hash differs"
print("same")
"""


def test_hash_equals_sglangs_triton_kernel():
    # SGLang's Triton kernel under Triton's interpreter (set before triton is imported: a
    # subprocess); equal hashes mean a seed draws the same token as SGLang's own sampler would.
    env = {**os.environ, "TRITON_INTERPRET": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-P", "-c", _SGLANG_HASH], env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and "same" in proc.stdout, proc.stderr[-2000:]
