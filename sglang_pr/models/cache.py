"""Materialising a :class:`~sglang_pr.models.base.ConvertedModel` once, safely.

The folder ``<models_dir>/<name>/`` is complete exactly when its manifest (sha256 and size of
every other file, written last) is there and matches. So:

- the conversion writes into a temporary sibling folder and is renamed into place only when
  finished, manifest included: a run killed mid-way leaves a ``.<name>.tmp-*`` folder, never a
  half-written ``<name>/`` (such leftovers are removed by the next run);
- a ``<name>/`` without a manifest, or one that does not match (truncated, edited), is redone;
  it is replaced only after the new folder is complete, so a failed redo changes nothing;
- a folder that matches is never touched; the check on every call compares sizes only (the
  weights are ~0.5 GB: hashing them each time would cost seconds), ``verify=True`` re-hashes;
- one process at a time converts a given name (an flock), a second one waits and then finds
  the folder done.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # annotations only: base.py calls into this module at run time
    from sglang_pr.models.base import ConvertedModel

MANIFEST = "sglang_pr_manifest.json"
MANIFEST_FORMAT = 1
_HASH_CHUNK = 1 << 20


def sha256_file(path: Path, sync: bool = False) -> str:
    """The file's sha256; ``sync``: also flush it to disk (before a manifest vouches for it)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_HASH_CHUNK):
            h.update(chunk)
        if sync:
            os.fsync(f.fileno())
    return h.hexdigest()


def build_manifest(folder: Path, name: str, source: dict) -> dict:
    """Size and sha256 of every file under ``folder`` (but the manifest itself)."""
    files = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and p.name != MANIFEST):
        rel = path.relative_to(folder).as_posix()
        files[rel] = {"size": path.stat().st_size, "sha256": sha256_file(path, sync=True)}
    return {"format": MANIFEST_FORMAT, "name": name, "source": source, "files": files}


def write_manifest(folder: Path, manifest: dict) -> None:
    tmp = folder / (MANIFEST + ".tmp")
    with open(tmp, "w") as f:
        json.dump(manifest, f, indent=1, sort_keys=True)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, folder / MANIFEST)


def read_manifest(folder: Path) -> dict | None:
    """The manifest, or None when it is absent, unreadable or of another format."""
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    ok = isinstance(manifest, dict) and manifest.get("format") == MANIFEST_FORMAT \
        and isinstance(manifest.get("files"), dict) and manifest["files"]
    return manifest if ok else None


def verify_files(folder: Path, manifest: dict, full: bool) -> str | None:
    """None when every listed file is there with its size (and, ``full``, its sha256);
    else what is wrong, naming the file."""
    for rel, want in manifest["files"].items():
        path = folder / rel
        try:
            size = path.stat().st_size
        except OSError:
            return f"{rel} is missing"
        if size != want.get("size"):
            return f"{rel} has {size} bytes, the manifest says {want.get('size')}"
        if full and sha256_file(path) != want.get("sha256"):
            return f"{rel} does not match its sha256"
    return None


def folder_problem(folder: Path, full: bool) -> str | None:
    """None when ``folder`` is a complete materialisation, else why not."""
    if not folder.exists():
        return "not materialised"
    manifest = read_manifest(folder)
    if manifest is None:
        return f"no valid {MANIFEST} (a run stopped mid-way?)"
    return verify_files(folder, manifest, full)


@contextlib.contextmanager
def _locked(lock_path: Path):
    with open(lock_path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)  # released when the file closes, also if we are killed
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _remove_leftovers(models_dir: Path, name: str) -> None:
    """Temporary folders of runs that were killed (only ever ours: the lock is held)."""
    for prefix in (f".{name}.tmp-", f".{name}.old-"):
        for path in models_dir.glob(prefix + "*"):
            shutil.rmtree(path, ignore_errors=True)


def _swap_in(new: Path, target: Path) -> None:
    """Rename the finished ``new`` folder to ``target``; a broken ``target`` is moved aside
    first and deleted only once ``new`` is in place."""
    if not target.exists():
        os.rename(new, target)
        return
    old = target.with_name(f".{target.name}.old-{os.getpid()}")
    os.rename(target, old)
    os.rename(new, target)
    shutil.rmtree(old, ignore_errors=True)


class _Steps:
    """A progress bar over the conversion's steps (tqdm, on stderr; silent when disabled)."""

    def __init__(self, name: str, total: int, enabled: bool):
        from tqdm.auto import tqdm

        self.name, self.started = name, False
        self.bar = tqdm(total=total, desc=f"materialise {name}", file=sys.stderr,
                        disable=not enabled, bar_format="{desc} [step {n}/{total}, {elapsed}]")

    def __call__(self, what: str) -> None:
        if self.started:
            self.bar.update(1)
        self.started = True
        self.bar.set_description_str(f"materialise {self.name}: {what}")

    def close(self) -> None:
        if self.started:
            self.bar.update(1)
        self.bar.close()


def _make_readable(folder: Path) -> None:
    """mkdtemp makes the folder private (0700) and some writers do the same to files; a model
    cache is shared like any installed file, so apply the user's umask instead."""
    umask = os.umask(0)
    os.umask(umask)
    folder.chmod(0o777 & ~umask)
    for path in folder.rglob("*"):
        path.chmod((0o777 if path.is_dir() else 0o666) & ~umask)


def _build(spec: ConvertedModel, source: Path, info: dict, out: Path, progress: bool) -> None:
    steps = _Steps(spec.name, spec.steps + 1, progress)
    try:
        spec.convert(source, out, steps)
        steps("checksums")
        _make_readable(out)
        # Written last: its presence means every file above it is complete.
        write_manifest(out, build_manifest(out, spec.name, info))
    finally:
        steps.close()


def materialise(spec: ConvertedModel, models_dir: Path, progress: bool = True,
                verify: bool = False) -> Path:
    """``<models_dir>/<spec.name>``, converted first unless it is already complete."""
    target = spec.folder(models_dir)
    if folder_problem(target, full=verify) is None:
        return target  # the common case: nothing to do, no lock, no hashing (unless verify)
    models_dir.mkdir(parents=True, exist_ok=True)
    with _locked(models_dir / f".{spec.name}.lock"):
        problem = folder_problem(target, full=verify)  # another process may have finished it
        if problem is None:
            return target
        source, info = spec.source()  # raises the install hint before anything is written
        if target.exists():
            print(f"sglang_pr: {target}: {problem}; converting it again", file=sys.stderr)
        _remove_leftovers(models_dir, spec.name)
        tmp = Path(tempfile.mkdtemp(prefix=f".{spec.name}.tmp-", dir=models_dir))
        try:
            _build(spec, source, info, tmp, progress)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        _swap_in(tmp, target)
    return target
