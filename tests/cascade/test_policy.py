"""When `sglang-pr serve` picks the cascade backend by itself."""

from __future__ import annotations

import pytest

from sglang_pr.cascade.policy import cascade_server_flags, should_use_cascade


def test_cpu_without_user_choice_uses_cascade():
    assert should_use_cascade(["--port", "30000"], has_accelerator=False)
    assert cascade_server_flags(False) == ["--attention-backend", "cascade"]


@pytest.mark.parametrize("flags", [
    ["--attention-backend", "torch_native"], ["--attention-backend=triton"],
    ["--decode-attention-backend", "flashinfer"], ["--speculative-algorithm", "NGRAM"],
])
def test_user_choices_win(flags):
    assert not should_use_cascade(flags, has_accelerator=False)


def test_gpu_is_opt_in_and_needs_cuda_graphs_off():
    assert not should_use_cascade([], has_accelerator=True)
    flags = cascade_server_flags(True)
    assert flags[flags.index("--cuda-graph-backend-decode") + 1] == "disabled"
