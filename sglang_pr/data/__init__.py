"""Question datasets: the JSONL loader and the shipped plain-language arithmetic set.

``load_dataset(path)`` reads any ``{"question": ..., "answer": ...}`` JSONL file;
``ARITH_WORDS_DEV`` / ``ARITH_WORDS_HELDOUT`` are the shipped splits, made by
``python -m sglang_pr.data.arith_words`` (tune on dev, report on held-out).
"""

from pathlib import Path

from sglang_pr.data.loader import DatasetError, Question, load_dataset

# Declared here, not in arith_words, so `python -m sglang_pr.data.arith_words` does not find
# its own module already imported by the package.
DATASETS_DIR = Path(__file__).resolve().parent.parent / "assets" / "datasets"
DEV_FILE, HELDOUT_FILE = "arith_words_dev.jsonl", "arith_words_heldout.jsonl"
ARITH_WORDS_DEV = DATASETS_DIR / DEV_FILE
ARITH_WORDS_HELDOUT = DATASETS_DIR / HELDOUT_FILE

__all__ = ["ARITH_WORDS_DEV", "ARITH_WORDS_HELDOUT", "DATASETS_DIR", "DatasetError", "Question",
           "load_dataset"]
