"""SGLang server settings sglang_pr applies on a machine without a GPU (declared once).

:data:`CPU_SERVER_DEFAULTS` maps ``ServerArgs`` field -> value. Two places apply it, each to
the fields the user left unset:

* ``sglang-pr serve`` (``cli/serve.py``) knows exactly which flags the user gave (it parses
  them with SGLang's own parser, defaults suppressed) and adds every other one, plus the
  checkpoint's dtype (:func:`cpu_server_defaults`);
* the CPU platform (``cpu_platform/platform.py``, for a plain ``python -m
  sglang.launch_server``) only sees values, so it fills the fields SGLang itself leaves
  ``None`` (its "unset"); a switch that is off or ``dtype="auto"`` could be the user's own
  choice there, so those come from ``serve`` alone, as do :data:`FLAGS_ONLY`.

On a GPU machine nothing here is applied: SGLang's own defaults stand.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path

# CUDA graphs off: a CPU has none, and the cascade backend plans every decode batch on the host
# (--disable-cuda-graph is deprecated in 0.5.23 in favour of these two).
NO_CUDA_GRAPH_FLAGS: dict[str, object] = {
    "cuda_graph_backend_decode": "disabled",
    "cuda_graph_backend_prefill": "disabled",
}

CPU_SERVER_DEFAULTS: dict[str, object] = {
    "device": "cpu",
    "attention_backend": "torch_native",  # no FlashInfer/Triton on a CPU
    "sampling_backend": "pytorch",  # no sgl-kernel sampling ops on a CPU
    **NO_CUDA_GRAPH_FLAGS,
    # Overlap scheduling needs a second CUDA stream; on CPU it only adds a thread hop.
    "disable_overlap_schedule": True,
    # Without a cap the KV pool takes ~72 % of RAM (15 GB, 30 s to allocate on 24 GiB).
    # 131072 tokens covers a 16-way fork of an 8k prompt on the shipped model.
    "max_total_tokens": 131072,
    # The scheduler busy-polls a core between requests unless told to sleep.
    "sleep_on_idle": True,
}

# SGLang folds these two into ``cuda_graph_config`` before it asks the platform for defaults:
# written there they would be recorded as "disabled" while the folded config kept graphs on.
FLAGS_ONLY = frozenset(NO_CUDA_GRAPH_FLAGS)


def cpu_server_defaults(model_path: str | Path) -> dict[str, object]:
    """:data:`CPU_SERVER_DEFAULTS` plus the dtype that suits ``model_path``'s checkpoint."""
    return {**CPU_SERVER_DEFAULTS, "dtype": cpu_dtype_for(model_path)}


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


def flags_argv(fields: Mapping[str, object]) -> list[str]:
    """ServerArgs fields as SGLang flags: ``{"max_total_tokens": 8, "sleep_on_idle": True}``
    -> ``["--max-total-tokens", "8", "--sleep-on-idle"]`` (True = a switch).

    Every field declared here is spelled ``--`` + its name with dashes in SGLang's parser
    (``tests/test_runtime_defaults.py`` parses them back with it).
    """
    out: list[str] = []
    for field, value in fields.items():
        flag = "--" + field.replace("_", "-")
        if value is True:
            out.append(flag)
        elif value is False or value is None:
            raise ValueError(f"{field}={value!r} cannot be written as a flag")
        else:
            out += [flag, str(value)]
    return out
