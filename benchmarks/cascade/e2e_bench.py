"""(b) End to end through SGLang's server: decode tokens/s of an n-way fork of a P-token prompt.

The benchmark builds a randomly initialised Llama (the shipped model's architecture, wider: only
speed is measured) and the shipped character tokenizer in a temporary directory, then compares
``--attention-backend torch_native`` (flat; FlashInfer on a GPU) with ``--attention-backend
cascade``.

Both servers run at once (SGLang's ``--sleep-on-idle``, a CPU default here, keeps the idle one
off the cores) and runs alternate between them, so the other jobs on a shared machine weigh on
both alike. Per server the prompt is sent once (prefilled into the radix cache, as the fork API
does), then ``reps`` times (alternating servers) an ``n``-branch fork request:

* decode tokens/s (``flat_tok_s`` / ``cascade_tok_s``): the scheduler's own decode throughput
  (its "Decode batch ... gen throughput" log line, every ``LOG_INTERVAL`` steps), median over
  the intervals where all n branches decode - the steady state that cascade changes;
* whole-request tokens/s (``*_request_tok_s``): all ``n * max_new_tokens`` tokens over the
  request's wall time, which also holds the n one-token extends of the cached prompt (SGLang's
  torch_native extend in both servers: O(P^2) per branch on CPU, so it weighs heavily here);
  and the same tokens per CPU-second used by all server processes (one compute thread each).

Servers are started with ``python -m sglang.launch_server`` and exactly the flags of
:func:`server_argv` (the CPU defaults from the declaration ``sglang-pr serve`` uses, under this
benchmark's own settings), so both servers differ in the attention backend alone.
"""

from __future__ import annotations

import json
import re
import statistics
import tempfile
import time
from pathlib import Path

import requests
import torch

from sglang_pr.runtime_defaults import CPU_SERVER_DEFAULTS, NO_CUDA_GRAPH_FLAGS, flags_argv
from sglang_pr.server.launcher import ServerHandle, launch, server_cpu_seconds

# A wider model of the shipped architecture (Llama, GQA 4): attention over a 2k prefix is a real
# share of a decode step, as in any model serving long prompts.
MODEL_SHAPE = dict(hidden_size=512, num_attention_heads=8, num_key_value_heads=2, head_dim=64,
                   intermediate_size=1536, num_hidden_layers=4)

# SGLang's scheduler log line for decode batches (the format its own debug_utils/log_parser.py
# reads): the throughput of the last --decode-log-interval decode steps.
_DECODE_LINE = re.compile(
    r"Decode batch.*?#running-req:\s*(\d+),.*?gen throughput \(token/s\):\s*([0-9.]+)"
)
LOG_INTERVAL = 8


def build_model(out_dir: Path, max_positions: int = 4096, seed: int = 0) -> Path:
    """Random-weight LlamaForCausalLM + the shipped char tokenizer, saved under ``out_dir``."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from sglang_pr.model import tokenizer as tok

    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=tok.VOCAB_SIZE, max_position_embeddings=max_positions,
                      bos_token_id=tok.BOS_ID, eos_token_id=tok.EOS_ID, pad_token_id=tok.PAD_ID,
                      tie_word_embeddings=False, **MODEL_SHAPE)
    LlamaForCausalLM(cfg).save_pretrained(out_dir)
    tok.save(out_dir)
    return out_dir


def server_argv(model: Path, backend: str, gpu: bool) -> list[str]:
    """SGLang flags of one server (started with SGLang's own launcher, so the CPU defaults
    ``serve`` would add are added here, under these settings)."""
    # float32 on CPU (the CPU path's dtype); bfloat16 on a GPU (FlashInfer has no float32).
    fields: dict[str, object] = {
        "model_path": model, "attention_backend": backend, "max_total_tokens": 32768,
        "dtype": "bfloat16" if gpu else "float32", "decode_log_interval": LOG_INTERVAL}
    if not gpu:
        fields = {**CPU_SERVER_DEFAULTS, **fields}
    elif backend == "cascade":
        fields.update(NO_CUDA_GRAPH_FLAGS)
    return flags_argv(fields)


def _server_cpu_s(handle: ServerHandle) -> float:
    """CPU seconds used so far by the server's processes (scheduler, tokenizer, detokenizer)."""
    return server_cpu_seconds(handle.processes())[0]


def timed_generate(handle: ServerHandle, inputs: dict, params: dict, timeout_s: float
                   ) -> tuple[float, float, list[dict], list[tuple[int, float]]]:
    """POST /generate ``inputs`` ({"text"} or {"input_ids"}) timed: (wall s, server CPU s, the
    outputs as a list, the scheduler's decode log lines of that request as (running, tok/s))."""
    offset = handle.log_path.stat().st_size
    c0, t0 = _server_cpu_s(handle), time.perf_counter()
    r = requests.post(handle.base_url + "/generate", timeout=timeout_s,
                      json={**inputs, "sampling_params": params})
    wall, cpu = time.perf_counter() - t0, _server_cpu_s(handle) - c0
    r.raise_for_status()
    out = r.json()
    with open(handle.log_path, errors="replace") as f:
        f.seek(offset)
        lines = [(int(a), float(b)) for a, b in _DECODE_LINE.findall(f.read())]
    return wall, cpu, out if isinstance(out, list) else [out], lines


def _one_run(handle: ServerHandle, prompt: str, n: int, new_tokens: int) -> dict:
    """One n-way fork: whole-request rates, and decode rates from the scheduler's log."""
    params = {"temperature": 1.0, "max_new_tokens": new_tokens, "ignore_eos": True, "n": n}
    wall, cpu, out, lines = timed_generate(handle, {"text": prompt}, params, 1800)
    tokens = sum(o["meta_info"]["completion_tokens"] for o in out)
    assert tokens == n * new_tokens, tokens
    # Intervals where all n branches decode; the first one may span the branches' extends.
    full = [tps for running, tps in lines if running == n][1:]
    return {"decode_tok_s": statistics.median(full) if full else float("nan"),
            "decode_intervals": len(full), "request_tok_s": tokens / wall,
            "request_tok_per_cpu_s": tokens / cpu}


def run_e2e_bench(P=2048, n=16, new_tokens=64, reps=3, gpu=False, log=print) -> list[dict]:
    """Both servers up at once (idle ones sleep), runs alternated so load drift hits both."""
    device = "cuda" if gpu else "cpu"
    flat_name = "flashinfer" if gpu else "torch_native"
    # One compute thread per server on CPU: CPU time then measures work, not OpenMP spinning.
    env = {} if gpu else {"OMP_NUM_THREADS": "1"}
    runs: dict[str, list[dict]] = {flat_name: [], "cascade": []}
    argvs = {}
    with tempfile.TemporaryDirectory(prefix="cascade_e2e_") as tmp:
        model = build_model(Path(tmp) / "model", max_positions=P + new_tokens + 64)
        prompt = ("Q: " + "12 +34 *5 -6 " * P)[: P - 1]  # BOS + P - 1 chars = P tokens
        handles = {}
        try:
            for b in runs:
                handles[b] = launch(extra_args=server_argv(model, b, gpu), env=env,
                                    log_path=Path(tmp) / f"{b}.log", timeout_s=600,
                                    module=("sglang.launch_server",))
                argvs[b] = handles[b].argv
                _one_run(handles[b], prompt, 1, 1)  # prefill the prompt into the radix cache
            for i in range(reps):
                for b in list(runs) if i % 2 == 0 else list(runs)[::-1]:
                    runs[b].append(_one_run(handles[b], prompt, n, new_tokens))
                    log(f"e2e {b}: " + ", ".join(f"{k} {v:.1f}" for k, v in runs[b][-1].items()))
        finally:
            for h in handles.values():
                h.stop()
    best = {b: {k: max(r[k] for r in rs) for k in rs[0]} for b, rs in runs.items()}
    flat, casc = best[flat_name], best["cascade"]
    return [{
        "device": device, "P": P, "n": n, "new_tokens": new_tokens, "flat_backend": flat_name,
        "flat_tok_s": flat["decode_tok_s"], "cascade_tok_s": casc["decode_tok_s"],
        "speedup": casc["decode_tok_s"] / flat["decode_tok_s"],
        "flat_request_tok_s": flat["request_tok_s"],
        "cascade_request_tok_s": casc["request_tok_s"],
        "speedup_request": casc["request_tok_s"] / flat["request_tok_s"],
        "speedup_request_cpu_time":
            casc["request_tok_per_cpu_s"] / flat["request_tok_per_cpu_s"],
        "runs": runs, "model": "tiny-reasoner", "model_shape": MODEL_SHAPE,
        "weights": "random (the shipped architecture, wider: only speed is measured)",
        "server_env": env,
        "server_argv": {"flat": argvs[flat_name], "cascade": argvs["cascade"]},
    }]


if __name__ == "__main__":  # quick manual run: python benchmarks/cascade/e2e_bench.py
    print(json.dumps(run_e2e_bench(reps=1), indent=1))
