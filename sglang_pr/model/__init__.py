"""The shipped tiny reasoning model: its task, tokenizer, and training script."""

from pathlib import Path

# The embedded default model: served when no --model-path is given.
SHIPPED_MODEL_DIR = Path(__file__).resolve().parent.parent / "assets" / "tiny-reasoner"
