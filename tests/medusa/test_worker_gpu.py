"""GPU twin of test_worker.py: MEDUSA on CUDA (SGLang's own tree-verify attention kernels,
fed the NGRAM-layout custom mask) gives plain greedy decoding's output.

Skipped without CUDA; never run in this project's CPU-only development environment, so it is
the first thing to run on a GPU machine.
"""

from __future__ import annotations

import pytest
import requests

from sglang_pr.medusa import SHIPPED_HEADS_DIR
from sglang_pr.model import task

pytestmark = [pytest.mark.gpu, pytest.mark.server]


@pytest.mark.parametrize("backend", ["triton", "flashinfer"])
def test_cuda_medusa_matches_plain_greedy(sglang_server_factory, backend):
    common = ["--attention-backend", backend, "--cuda-graph-backend-decode", "disabled",
              "--cuda-graph-backend-prefill", "disabled"]
    plain = sglang_server_factory(f"gpu_plain_{backend}", extra_args=common)
    medusa = sglang_server_factory(f"gpu_medusa_{backend}", extra_args=common + [
        "--speculative-algorithm", "MEDUSA",
        "--speculative-draft-model-path", str(SHIPPED_HEADS_DIR)])
    prompts = [p.prompt for p in task.heldout_set(50)]
    sp = {"temperature": 0.0, "max_new_tokens": 160}

    def run(url, texts):
        r = requests.post(url + "/generate", json={"text": texts, "sampling_params": sp},
                          timeout=600)
        assert r.status_code == 200, r.text
        return [o["text"] for o in r.json()]

    ref = run(plain.base_url, prompts)
    assert [run(medusa.base_url, p)[0] for p in prompts] == ref  # batch 1
    assert run(medusa.base_url, prompts) == ref  # one batch of 50
