"""Medusa head files: save, load, and check against the base model.

On disk a heads directory is the reference Medusa format, so published heads load as they are:

    config.json                  {"medusa_num_heads": 5, "medusa_num_layers": 1,
                                  "base_model_name_or_path": "...", ...}
    medusa_lm_head.safetensors   state dict "{k}.{j}.linear.weight|bias", "{k}.{L}.weight"
                                 (``medusa_lm_head.pt`` is read too, with weights_only=True)

What we add to config.json is optional for readers: ``hidden_size`` and ``vocab_size`` (so a
mismatch is named before any weight is read), ``medusa_shared_lm_head`` (true: the heads
project through the base model's lm_head, so the file holds no ``{k}.{L}.weight``; see
``heads.py`` for why real vocabularies use it) and ``sglang_pr`` with the calibrated ``tree``
and ``top_k`` the heads were trained with, and ``medusa_root_input`` (true: the heads also
read the root token, ``root_proj.weight`` [H, H]) and ``medusa_chain_input`` (true: head k >= 2
reads the token it follows, ``chain_proj.{k-2}.weight`` [H, H]; both in ``heads.py``).
Checkpoints whose heads have no projection of their own (the first Medusa release shared the
base lm_head) load as shared heads too, config field or not: the base lm_head is used by
reference, never copied per head.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Optional

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from sglang_pr.medusa.heads import MedusaHeads

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "medusa_lm_head.safetensors"
LEGACY_WEIGHTS_FILE = "medusa_lm_head.pt"
_KEY = re.compile(r"^((\d+)\.(\d+)\.(linear\.weight|linear\.bias|weight)|root_proj\.weight"
                  r"|chain_proj\.\d+\.weight)$")
ROOT_KEY = "root_proj.weight"


class MedusaHeadsError(ValueError):
    """A heads directory that cannot serve this base model (raised at startup)."""


def is_medusa_dir(path: str | Path) -> bool:
    """True when ``path`` holds a Medusa config (``medusa_num_heads`` in config.json)."""
    cfg = Path(path) / CONFIG_FILE
    try:
        return "medusa_num_heads" in json.loads(cfg.read_text())
    except (OSError, ValueError, TypeError):
        return False


def read_heads_config(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    cfg = p / CONFIG_FILE
    if not cfg.is_file():
        raise MedusaHeadsError(f"Medusa heads {p}: no {CONFIG_FILE} in that directory")
    try:
        data = json.loads(cfg.read_text())
    except ValueError as e:
        raise MedusaHeadsError(f"Medusa heads {cfg}: not valid JSON ({e})") from None
    if not isinstance(data, dict) or "medusa_num_heads" not in data:
        raise MedusaHeadsError(f"Medusa heads {cfg}: missing 'medusa_num_heads'")
    return data


def save_heads(
    path: str | Path,
    heads: MedusaHeads,
    *,
    base_model: str,
    tree: Optional[list[tuple[int, ...]]] = None,
    top_k: Optional[int] = None,
    extra: Optional[dict[str, Any]] = None,
) -> Path:
    """Write config.json + medusa_lm_head.safetensors (float32 on disk); returns the dir."""
    p = Path(path)
    p.mkdir(parents=True, exist_ok=True)
    state = {k: v.to("cpu", torch.float32) for k, v in heads.export_state_dict().items()}
    save_file(state, str(p / WEIGHTS_FILE))
    ours: dict[str, Any] = dict(extra or {})
    if tree is not None:
        ours["tree"] = [list(t) for t in tree]
    if top_k is not None:
        ours["top_k"] = int(top_k)
    if heads.draft_vocab is not None:  # sorted ids the heads rank (see MedusaHeads)
        ours["draft_vocab"] = [int(i) for i in heads.draft_vocab.cpu()]
    cfg = {
        "medusa_num_heads": heads.num_heads,
        "medusa_num_layers": heads.num_layers,
        "base_model_name_or_path": base_model,
        "hidden_size": heads.hidden_size,
        "vocab_size": heads.vocab_size,
        "medusa_shared_lm_head": heads.shared_lm_head,
        **({"medusa_root_input": True} if heads.root_input else {}),
        **({"medusa_chain_input": True} if heads.chain_input else {}),
        "version": "2",
        "sglang_pr": ours,
    }
    (p / CONFIG_FILE).write_text(json.dumps(cfg, indent=1) + "\n")
    return p


def _read_state(p: Path) -> dict[str, torch.Tensor]:
    if (p / WEIGHTS_FILE).is_file():
        return load_file(str(p / WEIGHTS_FILE))
    if (p / LEGACY_WEIGHTS_FILE).is_file():
        return torch.load(p / LEGACY_WEIGHTS_FILE, map_location="cpu", weights_only=True)
    raise MedusaHeadsError(f"Medusa heads {p}: neither {WEIGHTS_FILE} nor {LEGACY_WEIGHTS_FILE}")


def _read_shapes(p: Path, state: Optional[dict[str, torch.Tensor]] = None
                 ) -> dict[str, tuple[int, ...]]:
    """Tensor name -> shape; for safetensors only the header is read (cheap at startup).

    A legacy ``.pt`` has no header: its shapes come from ``state`` when the caller already
    read it, else from reading the whole file.
    """
    if state is None and (p / WEIGHTS_FILE).is_file():
        try:
            with safe_open(str(p / WEIGHTS_FILE), framework="pt") as f:
                return {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
        except Exception as e:  # a truncated or foreign file: name it
            raise MedusaHeadsError(f"Medusa heads {p / WEIGHTS_FILE}: unreadable ({e})") from None
    return {k: tuple(v.shape) for k, v in (state if state is not None else _read_state(p)).items()}


def check_heads(path: str | Path, *, hidden_size: int, vocab_size: int,
                state: Optional[dict[str, torch.Tensor]] = None) -> tuple[int, int, bool]:
    """Validate a heads directory against the base model without loading the weights.

    Returns (num_heads, num_layers, shared_lm_head). Raises MedusaHeadsError naming the file
    and the mismatch (hidden size, vocab size, missing or misshapen tensors). ``state``: the
    weights when the caller has them already (a legacy ``.pt``), so they are not read again.
    """
    p = Path(path)
    cfg = read_heads_config(p)
    num_heads, num_layers = int(cfg["medusa_num_heads"]), int(cfg.get("medusa_num_layers", 1))
    for key, base in (("hidden_size", hidden_size), ("vocab_size", vocab_size)):
        if key in cfg and int(cfg[key]) != base:
            raise MedusaHeadsError(
                f"Medusa heads {p}: {key.replace('_', ' ')} {cfg[key]} does not match the "
                f"base model's {base}"
            )
    shapes = _read_shapes(p, state)
    for key in shapes:
        if not _KEY.match(key):
            raise MedusaHeadsError(f"Medusa heads {p}: unexpected tensor '{key}'")
    if "0.0.linear.weight" not in shapes:
        raise MedusaHeadsError(f"Medusa heads {p}: no tensor '0.0.linear.weight'")
    hidden = shapes["0.0.linear.weight"][1]
    if hidden != hidden_size:
        raise MedusaHeadsError(
            f"Medusa heads {p}: hidden size {hidden} does not match the base model's {hidden_size}"
        )
    shared = f"0.{num_layers}.weight" not in shapes
    declared = cfg.get("medusa_shared_lm_head")
    if declared is not None and bool(declared) != shared:
        raise MedusaHeadsError(
            f"Medusa heads {p}: config.json says medusa_shared_lm_head={bool(declared)} but the "
            f"weights {'lack' if shared else 'hold'} per-head projections"
        )
    _check_root(p, cfg, shapes, hidden)
    _check_chain(p, cfg, shapes, hidden, num_heads)
    for k in range(num_heads):
        for j in range(num_layers):
            if shapes.get(f"{k}.{j}.linear.weight") != (hidden, hidden):
                raise MedusaHeadsError(
                    f"Medusa heads {p}: head {k} block {j} missing or not {hidden}x{hidden}"
                )
        proj = shapes.get(f"{k}.{num_layers}.weight")
        if shared != (proj is None):
            raise MedusaHeadsError(f"Medusa heads {p}: head {k} projection inconsistent")
        if proj is not None and proj != (vocab_size, hidden):
            raise MedusaHeadsError(
                f"Medusa heads {p}: head {k} projection is {proj[0]}x{proj[1]}, the base model "
                f"needs vocab size {vocab_size} x hidden size {hidden}"
            )
    return num_heads, num_layers, shared


def _check_root(p: Path, cfg: dict, shapes: dict, hidden: int) -> None:
    """config.json's medusa_root_input and root_proj.weight agree, and the latter is H x H."""
    declared, held = bool(cfg.get("medusa_root_input", False)), ROOT_KEY in shapes
    if declared != held:
        raise MedusaHeadsError(f"Medusa heads {p}: config.json says medusa_root_input="
                               f"{declared} but the weights {'hold' if held else 'lack'} "
                               f"'{ROOT_KEY}'")
    if held and shapes[ROOT_KEY] != (hidden, hidden):
        raise MedusaHeadsError(f"Medusa heads {p}: {ROOT_KEY} is {shapes[ROOT_KEY]}, needs "
                               f"{hidden}x{hidden}")


def _check_chain(p: Path, cfg: dict, shapes: dict, hidden: int, num_heads: int) -> None:
    """medusa_chain_input <=> chain_proj.0 .. chain_proj.{K-2}, each H x H."""
    declared = bool(cfg.get("medusa_chain_input", False))
    held = sorted(k for k in shapes if k.startswith("chain_proj."))
    want = sorted(f"chain_proj.{k}.weight" for k in range(num_heads - 1)) if declared else []
    if held != want:
        raise MedusaHeadsError(f"Medusa heads {p}: config.json says medusa_chain_input="
                               f"{declared} with {num_heads} heads, the weights hold "
                               f"{held or 'no chain_proj'}")
    for k in held:
        if shapes[k] != (hidden, hidden):
            raise MedusaHeadsError(f"Medusa heads {p}: {k} is {shapes[k]}, needs {hidden}x{hidden}")


def load_heads(
    path: str | Path,
    *,
    hidden_size: int,
    vocab_size: int,
    base_lm_head: Optional[torch.Tensor] = None,
    base_embedding: Optional[torch.Tensor] = None,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
) -> MedusaHeads:
    """Load heads and check them against the base model's hidden size and vocab size.

    The tree and top-k a heads directory carries are read by
    :func:`sglang_pr.medusa.config.resolve_medusa_config` (one place for the decoding side).
    """
    p = Path(path)
    config = read_heads_config(p)  # a missing or bad config.json is named before any weight
    draft_vocab = (config.get("sglang_pr") or {}).get("draft_vocab")
    # safetensors: check from the header, then read; a legacy .pt is read once for both.
    state = None if (p / WEIGHTS_FILE).is_file() else _read_state(p)
    num_heads, num_layers, shared = check_heads(p, hidden_size=hidden_size, vocab_size=vocab_size,
                                                state=state)
    state = state if state is not None else _read_state(p)
    root_input = bool(config.get("medusa_root_input", False))
    chain_input = bool(config.get("medusa_chain_input", False))
    heads = MedusaHeads(hidden_size, vocab_size, num_heads, num_layers, shared_lm_head=shared,
                        root_input=root_input, chain_input=chain_input)
    heads.import_state_dict({k: v.float() for k, v in state.items()})
    heads = heads.to(device=device, dtype=dtype)
    if shared:
        if base_lm_head is None:
            raise MedusaHeadsError(f"Medusa heads {p}: no projections and no base lm_head given")
        # By reference (a server's lm_head may carry padding rows past the vocab: cut them).
        heads.init_from_lm_head(base_lm_head.detach()[:vocab_size].to(device=device, dtype=dtype))
    if root_input or chain_input:
        if base_embedding is None:
            raise MedusaHeadsError(f"Medusa heads {p}: they read tokens (medusa_root_input / "
                                   f"medusa_chain_input) but no base input embedding was given")
        heads.set_embedding(base_embedding.detach()[:vocab_size].to(device=device, dtype=dtype))
    if draft_vocab is not None:
        try:
            heads.set_draft_vocab(torch.tensor(draft_vocab, dtype=torch.int64))
        except (ValueError, TypeError) as e:
            raise MedusaHeadsError(f"Medusa heads {p / CONFIG_FILE}: sglang_pr.draft_vocab: "
                                   f"{e}") from None
    return heads.eval()
