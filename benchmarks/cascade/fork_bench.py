"""Cascade end to end on a real model: a 16-way greedy fork of a cached ~2048-token text prompt.

    python benchmarks/cascade/fork_bench.py                          # SmolLM2-135M-Instruct
    python benchmarks/cascade/fork_bench.py --model-path DIR --rounds 3

Three SGLang servers of the same model, started with SGLang's own launcher and the CPU flags
``sglang-pr serve`` adds (one compute thread each), differing only in attention:

* ``torch_native`` - SGLang's backend (flat decode; extend queries every cached position);
* ``cascade_old_extend`` - ``--attention-backend cascade`` with ``{"extend": false}``: cascade
  decode, SGLang's torch_native extend;
* ``cascade`` - the backend as shipped: cascade decode and its own extend path (new tokens
  only, the shared prefix once for all branches).

The prompt is real English text: the first ``--prompt-tokens`` tokens of
``fork_prompt.txt``, a verbatim copy of CPython 3.11's ``LICENSE.txt`` (the history of Python
and the PSF license, as installed at ``<python prefix>/lib/python3.11/LICENSE.txt``), sent as
token ids so every server sees exactly the same prefix. Each server first prefills it once (the
radix cache then holds it, as after the fork API's own prefix request); then, per round and
alternating the order of servers round by round:

* extends: an ``n``-way greedy fork with ``max_new_tokens=1`` - the ``n`` one-token extends of
  the cached prompt (plus SGLang's own one-token prefix request for ``n > 1``);
* whole request: the same fork with ``max_new_tokens=new_tokens`` (``ignore_eos``): wall time,
  tokens/s over it, server CPU seconds, and the scheduler's decode tokens/s (its "Decode batch"
  log lines while all ``n`` branches run, first interval dropped).

Greedy outputs must be identical across the three servers in every round (``identical``).
Rows go into ``benchmarks/results/cascade.json`` (part ``e2e``, ``"model": <name>``, beside the
shipped-architecture rows) and the PNG is redrawn. Targets (issue 12, SmolLM2 on CPU): cascade
>= 2.5x decode tokens/s and >= 3x whole-request tokens/s vs torch_native.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_cascade import RESULTS, merge_rows, plot, targets, _load  # noqa: E402

from sglang_pr.benchmark_meta import run_metadata  # noqa: E402
from sglang_pr.optional import require_or_exit  # noqa: E402

PROMPT_FILE = Path(__file__).resolve().parent / "fork_prompt.txt"
PROMPT_SOURCE = "CPython 3.11 LICENSE.txt (history of the software + PSF license), verbatim"
# name -> (attention backend, SGLANG_PR_CASCADE or None)
CONFIGS = {
    "torch_native": ("torch_native", None),
    "cascade": ("cascade", {}),
    "cascade_old_extend": ("cascade", {"extend": False}),
}
LOG_INTERVAL = 8


def server_argv(model: Path, backend: str, max_total_tokens: int) -> list[str]:
    from sglang_pr.runtime_defaults import CPU_SERVER_DEFAULTS, flags_argv

    return flags_argv({**CPU_SERVER_DEFAULTS, "model_path": model, "attention_backend": backend,
                       "max_total_tokens": max_total_tokens, "dtype": "float32",
                       "decode_log_interval": LOG_INTERVAL})


def prompt_ids(model: Path, n_tokens: int, path: Path = PROMPT_FILE) -> list[int]:
    from transformers import AutoTokenizer

    ids = AutoTokenizer.from_pretrained(model)(path.read_text(), add_special_tokens=False)
    ids = ids["input_ids"][:n_tokens]
    if len(ids) < n_tokens:
        raise SystemExit(f"{path}: only {len(ids)} tokens, {n_tokens} asked (--prompt-tokens)")
    return ids


def _fork(handle, ids: list[int], n: int, new_tokens: int) -> tuple[float, float, list, list]:
    """One greedy n-way fork: ``(wall s, server CPU s, texts, decode log lines)``."""
    from e2e_bench import timed_generate

    params = {"temperature": 0.0, "max_new_tokens": new_tokens, "ignore_eos": True, "n": n}
    wall, cpu, out, lines = timed_generate(handle, {"input_ids": ids}, params, 3600)
    assert sum(o["meta_info"]["completion_tokens"] for o in out) == n * new_tokens
    return wall, cpu, [o["text"] for o in out], lines


def _one_round(handle, ids, n, new_tokens) -> tuple[dict, list[str]]:
    ext_s, _, _, _ = _fork(handle, ids, n, 1)
    wall, cpu, texts, lines = _fork(handle, ids, n, new_tokens)
    full = [tps for running, tps in lines if running == n][1:]
    tokens = n * new_tokens
    return {"extends_s": ext_s, "request_s": wall, "decode_s_est": wall - ext_s,
            "decode_tok_s": statistics.median(full) if full else float("nan"),
            "decode_intervals": len(full), "request_tok_s": tokens / wall,
            "request_tok_per_cpu_s": tokens / cpu}, texts


def _start(name: str, model: Path, max_total_tokens: int, tmp: str, ids: list[int], log):
    from sglang_pr.server.launcher import launch

    backend, casc = CONFIGS[name]
    env = {"OMP_NUM_THREADS": "1"}
    if casc is not None:
        env["SGLANG_PR_CASCADE"] = json.dumps(casc)
    handle = launch(extra_args=server_argv(model, backend, max_total_tokens), env=env,
                    log_path=Path(tmp) / f"{name}.log", timeout_s=1800,
                    module=("sglang.launch_server",))
    try:
        _fork(handle, ids, 1, 1)  # the prompt into the radix cache
    except BaseException:
        handle.stop()
        raise
    log(f"{name}: up, prompt cached")
    return handle, {"argv": handle.argv, "env": env}


def run(model: Path, ids: list[int], n: int, new_tokens: int, rounds: int,
        max_total_tokens: int, one_at_a_time: bool = False, raw: Path | None = None,
        log=print) -> dict:
    """All servers up at once and rounds alternating their order (default), or, where memory
    is short, one server at a time running all its rounds (``one_at_a_time``). ``raw``: the
    measurements so far are rewritten there after each one (``--from-raw`` reads it back)."""
    runs: dict[str, list[dict]] = {c: [] for c in CONFIGS}
    texts: dict[str, list[list[str]]] = {c: [] for c in CONFIGS}
    handles, servers = {}, {}

    def result() -> dict:
        done = [c for c in CONFIGS if runs[c]]
        return {"runs": {c: runs[c] for c in done}, "servers": servers,
                "identical": all(texts[c] == texts["torch_native"] for c in done),
                "one_at_a_time": one_at_a_time,
                "sample": texts["torch_native"][0][0][:200] if texts["torch_native"] else ""}

    def measure(name: str, i: int) -> None:
        res, out = _one_round(handles[name], ids, n, new_tokens)
        res["load_avg_1m"] = os.getloadavg()[0]
        runs[name].append(res)
        texts[name].append(out)
        log(f"round {i} {name}: " + ", ".join(f"{k} {v:.2f}" for k, v in res.items()))
        if raw is not None:
            raw.write_text(json.dumps(result(), indent=1))

    with tempfile.TemporaryDirectory(prefix="cascade_fork_") as tmp:
        try:
            if one_at_a_time:
                for name in CONFIGS:
                    handles[name], servers[name] = _start(name, model, max_total_tokens, tmp,
                                                          ids, log)
                    for i in range(rounds):
                        measure(name, i)
                    handles.pop(name).stop()
            else:
                for name in CONFIGS:
                    handles[name], servers[name] = _start(name, model, max_total_tokens, tmp,
                                                          ids, log)
                for i in range(rounds):
                    for name in list(CONFIGS) if i % 2 == 0 else list(CONFIGS)[::-1]:
                        measure(name, i)
        finally:
            for h in handles.values():
                h.stop()
    return result()


def make_row(res: dict, model_name: str, P: int, n: int, new_tokens: int) -> dict:
    """Medians per configuration and the ratios against torch_native."""
    med = {c: {k: statistics.median(r[k] for r in rs) for k in rs[0]}
           for c, rs in res["runs"].items()}
    flat, casc = med["torch_native"], med["cascade"]
    return {
        "device": "cpu", "model": model_name, "P": P, "n": n, "new_tokens": new_tokens,
        "prompt_source": PROMPT_SOURCE, "flat_backend": "torch_native",
        "flat_tok_s": flat["decode_tok_s"], "cascade_tok_s": casc["decode_tok_s"],
        "speedup": casc["decode_tok_s"] / flat["decode_tok_s"],
        "flat_request_tok_s": flat["request_tok_s"],
        "cascade_request_tok_s": casc["request_tok_s"],
        "speedup_request": casc["request_tok_s"] / flat["request_tok_s"],
        "speedup_request_cpu_time":
            casc["request_tok_per_cpu_s"] / flat["request_tok_per_cpu_s"],
        "medians": med,
        "ratios_vs_torch_native": {
            c: {"decode": m["decode_tok_s"] / flat["decode_tok_s"],
                "request": m["request_tok_s"] / flat["request_tok_s"],
                "extends": flat["extends_s"] / m["extends_s"]} for c, m in med.items()},
        "identical_greedy": res["identical"], "greedy_sample": res["sample"],
        "runs": res["runs"], "servers": res["servers"], "one_at_a_time": res["one_at_a_time"],
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--model-path", default="smollm2-135m", help="a known name or a folder")
    p.add_argument("--prompt-tokens", type=int, default=2048)
    p.add_argument("--n", type=int, default=16)
    p.add_argument("--new-tokens", type=int, default=64)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--max-total-tokens", type=int, default=8192)
    p.add_argument("--one-at-a-time", action="store_true",
                   help="one server at a time, all its rounds in a row (when memory is short; "
                   "load drift then weighs on the configurations unevenly)")
    p.add_argument("--raw", help="rewrite the measurements so far to this JSON after each one")
    p.add_argument("--from-raw", help="no run: make the row from a --raw file (a run cut short;"
                   " it needs torch_native and cascade)")
    p.add_argument("--out", default=str(RESULTS / "cascade.json"))
    args = p.parse_args(argv)
    for field in ("prompt_tokens", "n", "new_tokens", "rounds"):
        if getattr(args, field) < 1:
            p.error(f"--{field.replace('_', '-')}: must be >= 1")
    require_or_exit([("matplotlib", "bench", "the plot"), ("psutil", "bench", "server CPU times")])
    from sglang_pr.models import ModelError, resolve_model_path

    try:
        model = resolve_model_path(args.model_path)
    except ModelError as e:
        p.error(f"--model-path: {e}")
    name = args.model_path if "/" not in args.model_path else model.name
    meta = run_metadata()
    if args.from_raw:
        res = json.loads(Path(args.from_raw).read_text())
    else:
        ids = prompt_ids(model, args.prompt_tokens)
        res = run(model, ids, args.n, args.new_tokens, args.rounds, args.max_total_tokens,
                  args.one_at_a_time, Path(args.raw) if args.raw else None)
    row = make_row(res, name, args.prompt_tokens, args.n, args.new_tokens)
    out = Path(args.out)
    data = _load(out) if out.exists() else {}
    merge_rows(data, "e2e", [row], meta)
    data["targets"] = targets(data.get("kernel", []), data["e2e"])
    out.write_text(json.dumps(data, indent=1) + "\n")
    plot(data, out.with_suffix(".png"))
    print(json.dumps({k: row[k] for k in ("ratios_vs_torch_native", "identical_greedy")},
                     indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
