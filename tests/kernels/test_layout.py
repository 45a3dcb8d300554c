"""The work-list layout: the worked example of kernels/layout.py, built for real."""

from __future__ import annotations

import pytest
import torch

from sglang_pr.kernels.layout import make_worklist


def test_worked_example_from_the_docstring():
    prefix = make_worklist([[0, 1, 3]], [torch.tensor([10, 11, 12, 13, 14])])
    assert prefix.qo_indptr.tolist() == [0, 3] and prefix.qo_rows.tolist() == [0, 1, 3]
    assert prefix.kv_indptr.tolist() == [0, 5]
    suffix = make_worklist(
        [[0], [1], [2], [3]],
        [torch.tensor([20, 21]), torch.tensor([30]), torch.tensor([50, 51, 52]),
         torch.tensor([40, 41, 42])],
    )
    assert suffix.kv_indptr.tolist() == [0, 2, 3, 6, 9]
    assert suffix.kv_indices.tolist() == [20, 21, 30, 50, 51, 52, 40, 41, 42]
    assert suffix.kv_indices.dtype == torch.int32
    assert (suffix.max_qo_len, suffix.max_kv_len, suffix.kv_tokens_read()) == (1, 3, 9)
    assert prefix.kv_tokens_read() + suffix.kv_tokens_read() == 14  # flat would read 24


def test_mismatched_lists_are_rejected():
    with pytest.raises(ValueError, match="query-row lists"):
        make_worklist([[0], [1]], [torch.tensor([1])])
