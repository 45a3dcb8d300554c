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


# SmolLM2-135M's sizes: the reference layout written tensor by tensor by the test (no
# MedusaHeads involved), so the loader is checked against the format, not against itself.
SMOL_HIDDEN, SMOL_VOCAB = 576, 49152


def test_reference_layout_at_smollm2_sizes(tmp_path):
    """FasterDecoding/Medusa's ``medusa_lm_head``: ``{k}.{j}.linear.weight|bias`` per residual
    block and ``{k}.{L}.weight`` [vocab, hidden] per head, config without our keys. One head
    in float16 (as published heads are) keeps the file at 57 MB in tmp_path."""
    g = torch.Generator().manual_seed(0)
    w = (torch.randn(SMOL_HIDDEN, SMOL_HIDDEN, generator=g) * 0.02).half()
    b = (torch.randn(SMOL_HIDDEN, generator=g) * 0.02).half()
    proj = (torch.randn(SMOL_VOCAB, SMOL_HIDDEN, generator=g) * 0.02).half()
    save_file({"0.0.linear.weight": w, "0.0.linear.bias": b, "0.1.weight": proj},
              str(tmp_path / "medusa_lm_head.safetensors"))
    (tmp_path / "config.json").write_text(json.dumps({
        "medusa_num_heads": 1, "medusa_num_layers": 1,
        "base_model_name_or_path": "HuggingFaceTB/SmolLM2-135M-Instruct"}))
    assert check_heads(tmp_path, hidden_size=SMOL_HIDDEN, vocab_size=SMOL_VOCAB) == (1, 1, False)
    heads = load_heads(tmp_path, hidden_size=SMOL_HIDDEN, vocab_size=SMOL_VOCAB)
    x = torch.randn(2, SMOL_HIDDEN, generator=g)
    want = (x + torch.nn.functional.silu(x @ w.float().T + b.float())) @ proj.float().T
    torch.testing.assert_close(heads(x)[:, 0], want, rtol=1e-4, atol=1e-4)
    with pytest.raises(MedusaHeadsError, match="vocab size 49153"):
        check_heads(tmp_path, hidden_size=SMOL_HIDDEN, vocab_size=SMOL_VOCAB + 1)


def test_shared_lm_head_heads_at_smollm2_sizes_fit_in_git(tmp_path):
    """Our SmolLM2 variant: 5 heads of blocks only (the reference layout minus ``{k}.1.weight``),
    ``medusa_shared_lm_head`` in config.json; the base lm_head is used by reference."""
    torch.manual_seed(0)
    heads = MedusaHeads(SMOL_HIDDEN, SMOL_VOCAB, 5, shared_lm_head=True)
    with torch.no_grad():
        for p in heads.parameters():
            p.add_(torch.randn_like(p) * 0.01)
    save_heads(tmp_path, heads, base_model="smollm2-135m")
    assert (tmp_path / "medusa_lm_head.safetensors").stat().st_size <= 20 * 1024 * 1024
    assert json.loads((tmp_path / "config.json").read_text())["medusa_shared_lm_head"] is True
    lm = torch.randn(SMOL_VOCAB + 64, SMOL_HIDDEN) * 0.02  # a server's padded vocab rows
    loaded = load_heads(tmp_path, hidden_size=SMOL_HIDDEN, vocab_size=SMOL_VOCAB, base_lm_head=lm)
    assert loaded.lm_head.data_ptr() == lm.data_ptr()  # no copy of the 113 MB matrix
    x = torch.randn(3, SMOL_HIDDEN)
    torch.testing.assert_close(loaded(x)[:, 4], heads.heads[4](x) @ lm[:SMOL_VOCAB].T)
    with pytest.raises(MedusaHeadsError, match="no base lm_head"):
        load_heads(tmp_path, hidden_size=SMOL_HIDDEN, vocab_size=SMOL_VOCAB)


def test_declared_sharing_must_match_the_weights(tmp_path):
    save_heads(tmp_path, trained_heads(), base_model="m")  # own projections
    cfg = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps(cfg | {"medusa_shared_lm_head": True}))
    with pytest.raises(MedusaHeadsError, match="medusa_shared_lm_head=True"):
        check_heads(tmp_path, hidden_size=16, vocab_size=20)


def test_draft_vocab_round_trips_and_a_bad_one_is_named(tmp_path):
    heads = trained_heads().set_draft_vocab(torch.tensor([2, 5, 9, 13]))
    save_heads(tmp_path, heads, base_model="m")
    loaded = load_heads(tmp_path, hidden_size=16, vocab_size=20).fuse()
    h = torch.randn(3, 16)
    assert torch.equal(loaded.topk(h, 2), heads.topk(h, 2))
    assert set(loaded.topk(h, 2).flatten().tolist()) <= {2, 5, 9, 13}
    cfg = json.loads((tmp_path / "config.json").read_text())
    cfg["sglang_pr"]["draft_vocab"] = [2, 25]
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(MedusaHeadsError, match="sglang_pr.draft_vocab: .*distinct ids in"):
        load_heads(tmp_path, hidden_size=16, vocab_size=20)


def saved_token_heads(tmp_path, k: int, **flags):
    """Token-reading heads (root_input / chain_input) saved and loaded back; the loader
    refuses them without the base input embedding."""
    torch.manual_seed(0)
    lm, emb = torch.randn(20, 16), torch.randn(20, 16)
    heads = MedusaHeads(16, 20, k, base_lm_head=lm, shared_lm_head=True, base_embedding=emb,
                        **flags)
    with torch.no_grad():
        for p in heads.parameters():
            p.add_(torch.randn_like(p) * 0.2)
    save_heads(tmp_path, heads, base_model="m")
    cfg = json.loads((tmp_path / "config.json").read_text())
    assert all(cfg[f"medusa_{flag}"] is True for flag in flags)
    with pytest.raises(MedusaHeadsError, match="no base input embedding"):
        load_heads(tmp_path, hidden_size=16, vocab_size=20, base_lm_head=lm)
    return heads, load_heads(tmp_path, hidden_size=16, vocab_size=20, base_lm_head=lm,
                             base_embedding=emb)


def test_root_input_heads_round_trip_and_are_checked(tmp_path):
    heads, loaded = saved_token_heads(tmp_path, 2, root_input=True)
    h, root = torch.randn(3, 16), torch.tensor([1, 5, 19])
    torch.testing.assert_close(loaded(h, root=root), heads(h, root=root))
    cfg = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps(cfg | {"medusa_root_input": False}))
    with pytest.raises(MedusaHeadsError, match="medusa_root_input=False but the weights hold"):
        check_heads(tmp_path, hidden_size=16, vocab_size=20)
    state = heads.export_state_dict() | {"root_proj.weight": torch.zeros(16, 8)}
    save_file(state, str(tmp_path / "medusa_lm_head.safetensors"))
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(MedusaHeadsError, match="root_proj.weight is \\(16, 8\\)"):
        check_heads(tmp_path, hidden_size=16, vocab_size=20)


def test_chain_input_heads_round_trip_and_are_checked(tmp_path):
    heads, loaded = saved_token_heads(tmp_path, 3, chain_input=True)
    h = torch.randn(4, 16)
    assert torch.equal(loaded.topk(h, 3), heads.topk(h, 3))
    state = heads.export_state_dict()
    del state["chain_proj.1.weight"]
    save_file(state, str(tmp_path / "medusa_lm_head.safetensors"))
    with pytest.raises(MedusaHeadsError, match="medusa_chain_input=True with 3 heads"):
        check_heads(tmp_path, hidden_size=16, vocab_size=20)
