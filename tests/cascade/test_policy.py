"""When `sglang-pr serve` picks the cascade backend by itself."""

from __future__ import annotations

import pytest

from sglang_pr.cascade.policy import cascade_server_defaults, should_use_cascade


def test_cpu_without_user_choice_uses_cascade():
    assert should_use_cascade({"port", "model_path"}, has_accelerator=False)
    assert cascade_server_defaults(False) == {"attention_backend": "cascade"}


@pytest.mark.parametrize("field", [
    "attention_backend", "decode_attention_backend", "prefill_attention_backend",
    "speculative_algorithm",
])
def test_user_choices_win(field):
    assert not should_use_cascade({"port", field}, has_accelerator=False)


def test_gpu_is_opt_in_and_needs_cuda_graphs_off():
    assert not should_use_cascade(set(), has_accelerator=True)
    fields = cascade_server_defaults(True)
    assert fields["cuda_graph_backend_decode"] == fields["cuda_graph_backend_prefill"] == "disabled"
