"""Medusa-head speculative decoding registered with SGLang (issue 5).

Registered by ``registration.register`` (listed in ``sglang_pr.plugin.SUBSYSTEMS``) as the
speculative algorithm ``MEDUSA``; trained by ``sglang-pr medusa train`` (``cli.py``).
"""

from pathlib import Path

# Heads trained for the shipped model (sglang_pr/assets/tiny-reasoner): the default
# --speculative-draft-model-path of the demo and benchmarks.
SHIPPED_HEADS_DIR = Path(__file__).resolve().parent.parent / "assets" / "tiny-reasoner-medusa"
