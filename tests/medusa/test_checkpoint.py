"""Head files: round trip, the reference Medusa format, and clear errors for a wrong model."""

import json

import pytest
import torch
from safetensors.torch import save_file

from sglang_pr.medusa.checkpoint import (
    MedusaHeadsError,
    check_heads,
    is_medusa_dir,
    load_heads,
    save_heads,
)
from sglang_pr.medusa.heads import MedusaHeads
from sglang_pr.medusa.config import resolve_medusa_config

torch.set_num_threads(1)


def trained_heads(hidden=16, vocab=20, k=3):
    torch.manual_seed(0)
    heads = MedusaHeads(hidden, vocab, k, base_lm_head=torch.randn(vocab, hidden))
    with torch.no_grad():
        for p in heads.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    return heads


def test_round_trip_with_tree(tmp_path):
    heads = trained_heads()
    save_heads(tmp_path, heads, base_model="m", tree=[(0,), (0, 0)], top_k=4)
    assert is_medusa_dir(tmp_path)
    loaded = load_heads(tmp_path, hidden_size=16, vocab_size=20)
    h = torch.randn(3, 16)
    torch.testing.assert_close(loaded(h), heads(h))
    # The decoding side reads the tree and top-k the directory carries.
    cfg = resolve_medusa_config(str(tmp_path), env="")
    assert cfg.tree == ((0,), (0, 0)) and cfg.top_k == 4 and cfg.num_heads == 3
    cfg = json.loads((tmp_path / "config.json").read_text())
    assert cfg["medusa_num_heads"] == 3 and cfg["medusa_num_layers"] == 1


def test_reference_format_without_our_keys(tmp_path):
    heads = trained_heads()
    save_file(heads.export_state_dict(), str(tmp_path / "medusa_lm_head.safetensors"))
    (tmp_path / "config.json").write_text(json.dumps(
        {"medusa_num_heads": 3, "medusa_num_layers": 1, "base_model_name_or_path": "x"}))
    loaded = load_heads(tmp_path, hidden_size=16, vocab_size=20)
    torch.testing.assert_close(loaded(torch.ones(1, 16)), heads(torch.ones(1, 16)))
    assert not check_heads(tmp_path, hidden_size=16, vocab_size=20)[2]  # own projections
    # No tree of its own: the default tree cut to the file's 3 heads.
    assert max(len(p) for p in resolve_medusa_config(str(tmp_path), env="").tree) == 3


def test_legacy_pt_without_projection_uses_base_lm_head(tmp_path, monkeypatch):
    heads = trained_heads()
    blocks = {k: v for k, v in heads.export_state_dict().items() if "linear" in k}
    torch.save(blocks, tmp_path / "medusa_lm_head.pt")
    (tmp_path / "config.json").write_text(json.dumps({"medusa_num_heads": 3}))
    lm = torch.randn(20, 16)
    reads = []
    real_load = torch.load
    monkeypatch.setattr(torch, "load", lambda *a, **k: reads.append(a[0]) or real_load(*a, **k))
    loaded = load_heads(tmp_path, hidden_size=16, vocab_size=20, base_lm_head=lm)
    assert len(reads) == 1  # a .pt has no header: checked and loaded from one read
    assert check_heads(tmp_path, hidden_size=16, vocab_size=20)[2]  # projections shared
    x = torch.randn(2, 16)
    block = heads.heads[1][0]
    torch.testing.assert_close(loaded(x)[:, 1], block(x) @ lm.T)


@pytest.mark.parametrize("hidden,vocab,needle", [(32, 20, "hidden size 16"),
                                                  (16, 21, "vocab")])
def test_mismatch_is_named(tmp_path, hidden, vocab, needle):
    save_heads(tmp_path, trained_heads(), base_model="m")
    with pytest.raises(MedusaHeadsError, match=needle):
        check_heads(tmp_path, hidden_size=hidden, vocab_size=vocab)
    with pytest.raises(MedusaHeadsError, match=str(tmp_path)):
        load_heads(tmp_path, hidden_size=hidden, vocab_size=vocab)


def test_mismatch_found_in_tensors_when_config_is_silent(tmp_path):
    heads = trained_heads()
    save_file(heads.export_state_dict(), str(tmp_path / "medusa_lm_head.safetensors"))
    (tmp_path / "config.json").write_text(json.dumps({"medusa_num_heads": 3}))
    with pytest.raises(MedusaHeadsError, match="vocab size 99"):
        check_heads(tmp_path, hidden_size=16, vocab_size=99)


def test_missing_and_broken_files(tmp_path):
    with pytest.raises(MedusaHeadsError, match="no config.json"):
        check_heads(tmp_path, hidden_size=16, vocab_size=20)
    (tmp_path / "config.json").write_text(json.dumps({"medusa_num_heads": 3}))
    with pytest.raises(MedusaHeadsError, match="neither"):
        check_heads(tmp_path, hidden_size=16, vocab_size=20)
    (tmp_path / "medusa_lm_head.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(MedusaHeadsError, match="unreadable"):
        check_heads(tmp_path, hidden_size=16, vocab_size=20)
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(MedusaHeadsError, match="medusa_num_heads"):
        check_heads(tmp_path, hidden_size=16, vocab_size=20)
