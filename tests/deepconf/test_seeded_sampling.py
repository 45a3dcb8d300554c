"""The CPU seeded sampler: deterministic per (seed, position), distributed like the weights."""

import torch

from sglang_pr.deepconf.seeded_sampling import cpu_multinomial_with_seed, murmur_hash32_torch


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
