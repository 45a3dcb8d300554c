"""Torch stand-in for SGLang's Triton req_to_token write (CPU path)."""

import torch

from sglang_pr.cpu_platform.spec_kv import assign_req_to_token_torch


def test_assign_worked_example():
    r2t = torch.zeros(6, 16, dtype=torch.int32)
    assign_req_to_token_torch(torch.tensor([3, 5]), r2t, torch.tensor([10, 4]),
                              torch.tensor([12, 5]), torch.tensor([7, 8, 9]))
    assert r2t[3, 10:12].tolist() == [7, 8] and r2t[5, 4:5].tolist() == [9]
    assert int(r2t.count_nonzero()) == 3
