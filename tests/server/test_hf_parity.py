"""Greedy decoding of the shipped model: transformers and the SGLang server agree token for token."""

from __future__ import annotations

import requests
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from sglang_pr.model import SHIPPED_MODEL_DIR, task

N_PROMPTS, MAX_NEW = 20, 160


def _hf_greedy(prompts: list[str]) -> list[list[int]]:
    tok = AutoTokenizer.from_pretrained(SHIPPED_MODEL_DIR)
    model = AutoModelForCausalLM.from_pretrained(SHIPPED_MODEL_DIR, dtype=torch.float32).eval()
    outs = []
    with torch.no_grad():
        for prompt in prompts:
            ids = tok(prompt, return_tensors="pt").input_ids
            gen = model.generate(ids, max_new_tokens=MAX_NEW, do_sample=False,
                                 eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
            new = gen[0, ids.shape[1]:].tolist()
            outs.append(new[: new.index(tok.eos_token_id) + 1] if tok.eos_token_id in new else new)
    return outs


def test_transformers_and_sglang_greedy_agree(base_url):
    prompts = [p.prompt for p in task.heldout_set(N_PROMPTS)]
    r = requests.post(base_url + "/generate", timeout=600, json={
        "text": prompts, "sampling_params": {"temperature": 0, "max_new_tokens": MAX_NEW}})
    assert r.status_code == 200, r.text
    served = [o["output_ids"] for o in r.json()]
    reference = _hf_greedy(prompts)
    eos = AutoTokenizer.from_pretrained(SHIPPED_MODEL_DIR).eos_token_id
    for prompt, got, want in zip(prompts, served, reference):
        # SGLang reports the EOS that ended a request among output_ids; strip it on both sides.
        got = [t for t in got if t != eos]
        want = [t for t in want if t != eos]
        assert got == want, f"{prompt!r}: sglang {got[:20]}... vs hf {want[:20]}..."
