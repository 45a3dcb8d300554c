"""What every named model is: a frozen spec with a name, and the check that a folder is a model.

A spec either points at a folder that is already there (the shipped model) or knows how to
make one (:class:`ConvertedModel`: materialised once under the models cache by
:mod:`sglang_pr.models.cache`, from something installed on this machine, never from a hub).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

# Any of these makes a folder's tokenizer loadable by transformers' AutoTokenizer (fast JSON,
# sentencepiece, BPE vocab/merges, tiktoken).
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json", "tokenizer.tiktoken")

# Progress callback a converter calls at the start of each of its steps (description).
Step = Callable[[str], None]


class ModelError(ValueError):
    """A bad model name or folder; ``str()`` is one line naming the name, folder or file."""


def check_model_dir(path: str | Path) -> Path:
    """``path`` itself if it is a model folder (config.json and a tokenizer), else ModelError
    naming the missing file."""
    path = Path(path).expanduser()
    if not path.is_dir():
        raise ModelError(f"{path}: not a folder")
    if not (path / "config.json").is_file():
        raise ModelError(f"{path / 'config.json'}: missing (a model folder needs config.json)")
    if not any((path / f).is_file() for f in TOKENIZER_FILES):
        raise ModelError(f"{path / TOKENIZER_FILES[0]}: missing (a model folder needs a "
                         f"tokenizer: one of {', '.join(TOKENIZER_FILES)})")
    return path


@dataclass(frozen=True)
class ModelSpec(ABC):
    """A model known by name. ``description`` is one line for ``sglang-pr models``."""

    name: str
    description: str

    @abstractmethod
    def folder(self, models_dir: Path) -> Path:
        """Where the model's folder is (or will be, once materialised)."""

    @abstractmethod
    def is_ready(self, models_dir: Path) -> bool:
        """True when :meth:`folder` holds the complete model (cheap: no hashing)."""

    @abstractmethod
    def materialise(self, models_dir: Path, progress: bool = True, verify: bool = False) -> Path:
        """The model's folder, made first if needed. ``verify``: re-hash what is there."""


@dataclass(frozen=True)
class ShippedModel(ModelSpec):
    """A model that ships inside the package: nothing to make."""

    path: Path

    def folder(self, models_dir: Path) -> Path:
        return self.path

    def is_ready(self, models_dir: Path) -> bool:
        try:
            check_model_dir(self.path)
        except ModelError:
            return False
        return True

    def materialise(self, models_dir: Path, progress: bool = True, verify: bool = False) -> Path:
        return check_model_dir(self.path)


@dataclass(frozen=True)
class ConvertedModel(ModelSpec):
    """A model converted once from an installed source into ``<models_dir>/<name>/``.

    Subclasses say where the source is (:meth:`source`, raising ModelError with the install
    command when it is absent) and how to convert it (:meth:`convert`); the cache makes the
    step atomic, checksummed and idempotent.
    """

    @abstractmethod
    def source(self) -> tuple[Path, dict]:
        """The installed source file and a description of it for the manifest (versions)."""

    @abstractmethod
    def convert(self, source: Path, out_dir: Path, step: Step) -> None:
        """Write the HF folder into the empty ``out_dir`` (a temporary folder)."""

    @property
    def steps(self) -> int:
        """How many times :meth:`convert` calls ``step`` (for the progress bar's total)."""
        return 1

    def folder(self, models_dir: Path) -> Path:
        return models_dir / self.name

    def is_ready(self, models_dir: Path) -> bool:
        from sglang_pr.models.cache import folder_problem

        return folder_problem(self.folder(models_dir), full=False) is None

    def materialise(self, models_dir: Path, progress: bool = True, verify: bool = False) -> Path:
        from sglang_pr.models.cache import materialise

        return materialise(self, models_dir, progress=progress, verify=verify)
