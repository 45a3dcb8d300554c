"""SGLang server settings sglang_pr applies on a machine without a GPU (declared once).

On a GPU machine nothing here is applied: SGLang's own defaults stand.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

# ServerArgs field -> value, applied by the CPU platform to whatever the user left unset
# (so a plain `python -m sglang.launch_server` with the plugin installed also works on CPU).
CPU_SERVER_DEFAULTS: dict[str, object] = {
    "attention_backend": "torch_native",  # no FlashInfer/Triton on a CPU
    "sampling_backend": "pytorch",  # no sgl-kernel sampling ops on a CPU
}

# CUDA graphs off, as flags (--disable-cuda-graph is deprecated in 0.5.23 in favour of these
# two): a CPU has none, and the cascade backend plans every decode batch on the host.
NO_CUDA_GRAPH_FLAGS: dict[str, str] = {
    "--cuda-graph-backend-decode": "disabled",
    "--cuda-graph-backend-prefill": "disabled",
}

# The same, plus settings argparse cannot tell "unset" from "default" for, as flags that
# `sglang-pr serve` adds when the user did not pass them.
CPU_SERVER_FLAGS: dict[str, str | None] = {
    "--device": "cpu",
    "--attention-backend": "torch_native",
    "--sampling-backend": "pytorch",
    **NO_CUDA_GRAPH_FLAGS,
    # Overlap scheduling needs a second CUDA stream; on CPU it only adds a thread hop.
    "--disable-overlap-schedule": None,
    # Without a cap the KV pool takes ~72 % of RAM (15 GB, 30 s to allocate on 24 GiB).
    # 131072 tokens covers a 16-way fork of an 8k prompt on the shipped model.
    "--max-total-tokens": "131072",
    # The scheduler busy-polls a core between requests unless told to sleep.
    "--sleep-on-idle": None,
}


def cpu_torch_threads(cpu_count: int | None = None) -> int:
    """Intra-op threads for the scheduler's model forward on a CPU: all cores but one.

    SGLang's HTTP/tokenizer and detokenizer processes need a core too; when the model's OpenMP
    threads compete with them, every barrier spins (measured on 2 cores: 25-60 decode tokens/s
    with 2 threads vs ~2,000 with 1 for the shipped model, same greedy output).
    """
    return max(1, (cpu_count or os.cpu_count() or 2) - 1)


def cpu_dtype_for(model_path: str | Path) -> str:
    """float32 for checkpoints stored in float32 (exact, and CPUs lack fast fp16), else bfloat16.

    SGLang's "auto" would turn a float32 checkpoint into float16, which CPUs run slowly and
    which breaks token-for-token agreement with the float32 reference.
    """
    cfg_file = Path(model_path) / "config.json"
    if not cfg_file.is_file():
        return "bfloat16"
    cfg = json.loads(cfg_file.read_text())
    stored = cfg.get("torch_dtype") or cfg.get("dtype") or "float32"
    return "float32" if stored == "float32" else "bfloat16"


def flags_argv(flags: dict[str, str | None]) -> list[str]:
    """``{"--a": "1", "--b": None}`` -> ``["--a", "1", "--b"]`` (None = a switch)."""
    return [x for flag, value in flags.items() for x in (flag, value) if x is not None]


def add_unset_flags(argv: list[str], flags: dict[str, str | None]) -> list[str]:
    """``argv`` plus each of ``flags`` the user did not set (see :func:`flags_argv`)."""
    return list(argv) + flags_argv({f: v for f, v in flags.items() if not has_flag(argv, f)})


def has_flag(argv, flag: str) -> bool:
    """Whether ``argv`` sets ``flag`` (as ``--flag v`` or ``--flag=v``)."""
    return any(a == flag or a.startswith(flag + "=") for a in argv)
