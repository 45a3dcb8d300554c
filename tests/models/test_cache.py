"""Materialising once: idempotent, checksummed, atomic, and never losing what is there."""

from __future__ import annotations

import json
import threading

import pytest

from sglang_pr.models.cache import MANIFEST, folder_problem, materialise, read_manifest, sha256_file


def test_first_call_converts_and_writes_the_manifest_last(fake_model, tmp_path):
    folder = materialise(fake_model, tmp_path, progress=False)
    assert folder == tmp_path / "fake" and fake_model.state["calls"] == 1
    manifest = read_manifest(folder)
    assert set(manifest["files"]) == {"config.json", "model.safetensors", "tokenizer.json"}
    weights = manifest["files"]["model.safetensors"]
    assert weights == {"size": 4096, "sha256": sha256_file(folder / "model.safetensors")}
    assert manifest["name"] == "fake" and manifest["source"] == {"distribution": "fake", "version": "1"}
    # Only the finished folder and the lock file: no temporary folder is left behind.
    assert sorted(p.name for p in tmp_path.iterdir()) == [".fake.lock", "fake"]


def test_second_call_does_nothing(fake_model, tmp_path):
    folder = materialise(fake_model, tmp_path, progress=False)
    mtimes = {p.name: p.stat().st_mtime_ns for p in folder.iterdir()}
    assert materialise(fake_model, tmp_path, progress=False) == folder
    assert materialise(fake_model, tmp_path, progress=False, verify=True) == folder
    assert fake_model.state["calls"] == 1
    assert {p.name: p.stat().st_mtime_ns for p in folder.iterdir()} == mtimes
    assert fake_model.is_ready(tmp_path)


def test_folder_without_manifest_is_redone(fake_model, tmp_path):
    # What a run killed mid-way by an older, non-atomic writer (or a user's copy) leaves.
    half = tmp_path / "fake"
    half.mkdir()
    (half / "config.json").write_text("{}")
    (half / "model.safetensors").write_bytes(b"w" * 100)
    assert not fake_model.is_ready(tmp_path)
    assert "no valid" in folder_problem(half, full=False)
    folder = materialise(fake_model, tmp_path, progress=False)
    assert fake_model.state["calls"] == 1
    assert (folder / "model.safetensors").stat().st_size == 4096 and (folder / MANIFEST).is_file()


def test_truncated_file_is_redone(fake_model, tmp_path):
    folder = materialise(fake_model, tmp_path, progress=False)
    (folder / "model.safetensors").write_bytes(b"w" * 10)
    assert "model.safetensors has 10 bytes" in folder_problem(folder, full=False)
    materialise(fake_model, tmp_path, progress=False)
    assert fake_model.state["calls"] == 2 and folder_problem(folder, full=True) is None


def test_same_size_corruption_needs_verify(fake_model, tmp_path):
    folder = materialise(fake_model, tmp_path, progress=False)
    (folder / "model.safetensors").write_bytes(b"x" * 4096)
    # The per-call check compares sizes only (hashing ~0.5 GB each time would cost seconds) ...
    materialise(fake_model, tmp_path, progress=False)
    assert fake_model.state["calls"] == 1
    # ... verify re-hashes, finds the mismatch and redoes the folder.
    assert "does not match its sha256" in folder_problem(folder, full=True)
    materialise(fake_model, tmp_path, progress=False, verify=True)
    assert fake_model.state["calls"] == 2
    assert (folder / "model.safetensors").read_bytes() == b"w" * 4096


def test_killed_run_leaves_no_half_folder_and_its_leftovers_go(fake_model, tmp_path):
    fake_model.state["fail_after"] = "config"
    with pytest.raises(RuntimeError, match="killed after config.json"):
        materialise(fake_model, tmp_path, progress=False)
    assert not (tmp_path / "fake").exists()
    assert [p.name for p in tmp_path.iterdir()] == [".fake.lock"]
    # A SIGKILL skips the cleanup above: simulate its leftover, the next run removes it.
    leftover = tmp_path / ".fake.tmp-dead"
    leftover.mkdir()
    (leftover / "config.json").write_text("{}")
    fake_model.state["fail_after"] = None
    materialise(fake_model, tmp_path, progress=False)
    assert not leftover.exists() and fake_model.is_ready(tmp_path)


def test_failed_redo_keeps_the_old_folder(fake_model, tmp_path):
    broken = tmp_path / "fake"
    broken.mkdir()
    (broken / "notes.txt").write_text("mine")
    fake_model.state["fail_after"] = "config"
    with pytest.raises(RuntimeError):
        materialise(fake_model, tmp_path, progress=False)
    assert (broken / "notes.txt").read_text() == "mine"


def test_other_models_are_untouched(fake_model, tmp_path):
    other = tmp_path / "other"
    other.mkdir()
    (other / "model.safetensors").write_bytes(b"keep")
    materialise(fake_model, tmp_path, progress=False)
    assert (other / "model.safetensors").read_bytes() == b"keep"


def test_missing_source_writes_nothing(fake_model, tmp_path):
    fake_model.state["installed"] = False
    with pytest.raises(ValueError, match="pip install fake"):
        materialise(fake_model, tmp_path / "models", progress=False)
    assert not (tmp_path / "models" / "fake").exists()


def test_two_processes_convert_once(fake_model, tmp_path):
    # The lock is an flock on a file each caller opens itself, so two threads contend exactly
    # like two processes do; the second finds the folder done when it gets the lock.
    fake_model.state["sleep"] = 0.3
    results, errors = [], []

    def go():
        try:
            results.append(materialise(fake_model, tmp_path, progress=False))
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=go) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and results == [tmp_path / "fake"] * 2
    assert fake_model.state["calls"] == 1


def test_progress_bar_names_the_steps(fake_model, tmp_path, capsys):
    materialise(fake_model, tmp_path, progress=True)
    err = capsys.readouterr().err
    assert "materialise fake" in err and "checksums" in err


def test_manifest_of_another_format_is_not_trusted(fake_model, tmp_path):
    folder = materialise(fake_model, tmp_path, progress=False)
    manifest = json.loads((folder / MANIFEST).read_text())
    (folder / MANIFEST).write_text(json.dumps({**manifest, "format": 999}))
    assert read_manifest(folder) is None
    materialise(fake_model, tmp_path, progress=False)
    assert fake_model.state["calls"] == 2


KILLED_CHILD = """
import sys, time
from pathlib import Path
from sglang_pr.models.base import ConvertedModel
from sglang_pr.models.cache import materialise

class Slow(ConvertedModel):
    def source(self):
        return Path("/nonexistent"), {}
    def convert(self, source, out_dir, step):
        (out_dir / "config.json").write_text("{}")
        (out_dir / "tokenizer.json").write_text("{}")
        print("converting", flush=True)
        time.sleep(60)

materialise(Slow(name="fake", description=""), Path(sys.argv[1]), progress=False)
"""


def test_sigkill_mid_conversion_leaves_no_folder(fake_model, tmp_path):
    import signal
    import subprocess
    import sys

    child = subprocess.Popen([sys.executable, "-c", KILLED_CHILD, str(tmp_path)],
                             stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "converting"
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
    assert not (tmp_path / "fake").exists()
    assert [p.name for p in tmp_path.glob(".fake.tmp-*")]  # what the kill left behind
    # The lock died with the process; the next run cleans up and converts.
    materialise(fake_model, tmp_path, progress=False)
    assert fake_model.is_ready(tmp_path) and not list(tmp_path.glob(".fake.tmp-*"))
