"""Token confidence against a direct numpy computation."""

import numpy as np
import pytest
import torch

from sglang_pr.deepconf.confidence import (
    confidence_from_logprobs,
    token_confidence,
    topk_logprob_mean,
    topk_logprob_prefix_means,
)

torch.set_num_threads(1)


def _numpy_conf(logits: np.ndarray, k: int) -> np.ndarray:
    z = logits - logits.max(axis=-1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(axis=-1, keepdims=True))
    top = -np.sort(-logp, axis=-1)[:, :k]
    return -top.mean(axis=-1)


@pytest.mark.parametrize("k", [1, 5, 20])
def test_matches_numpy(k):
    rng = np.random.default_rng(k)
    logits = rng.normal(scale=3.0, size=(7, 50)).astype(np.float32)
    got = token_confidence(torch.from_numpy(logits), k).numpy()
    np.testing.assert_allclose(got, _numpy_conf(logits.astype(np.float64), k), rtol=1e-5)


def test_prefix_means_cover_every_k():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(4, 30)).astype(np.float32)
    table = topk_logprob_prefix_means(torch.from_numpy(logits), 10).numpy()
    assert table.shape == (4, 10)
    for k in range(1, 11):
        np.testing.assert_allclose(table[:, k - 1], _numpy_conf(logits.astype(np.float64), k),
                                   rtol=1e-5)
        # The one-k path (no prefix table) gives the same column.
        np.testing.assert_allclose(topk_logprob_mean(torch.from_numpy(logits), k).numpy(),
                                   table[:, k - 1], rtol=1e-5)


def test_peaked_is_more_confident_than_flat():
    flat = torch.zeros(1, 100)
    peaked = torch.zeros(1, 100)
    peaked[0, 3] = 20.0
    assert token_confidence(peaked, 20).item() > token_confidence(flat, 20).item()
    # flat: every log-prob is -log(100)
    assert token_confidence(flat, 20).item() == pytest.approx(np.log(100), rel=1e-6)


def test_k_larger_than_vocab_is_clipped_and_1d_input():
    logits = torch.randn(8)
    assert token_confidence(logits, 50).dim() == 0
    assert token_confidence(logits, 50).item() == pytest.approx(
        token_confidence(logits, 8).item())


def test_from_logprobs_and_bf16():
    lp = torch.log_softmax(torch.randn(3, 40), -1)
    top = torch.topk(lp, 20, -1).values
    torch.testing.assert_close(confidence_from_logprobs(top), token_confidence(lp, 20))
    got = token_confidence(lp.to(torch.bfloat16), 20)
    assert got.dtype == torch.float32
