"""register(): the backend is in SGLang's registry and among --attention-backend's choices."""

from __future__ import annotations

import argparse

from sglang.srt.layers.attention.attention_registry import ATTENTION_BACKENDS

import sglang_pr.cascade as cascade


def test_register_adds_backend_and_cli_choice():
    features: list[str] = []
    cascade.register(features)
    cascade.register([])  # idempotent: the choice is listed once
    assert features == ["cascade_attention"]
    assert ATTENTION_BACKENDS["cascade"] is cascade._create_backend
    from sglang.srt.server_args import ServerArgs

    parser = argparse.ArgumentParser()
    ServerArgs.add_cli_args(parser)
    ns = parser.parse_args(["--model-path", "x", "--attention-backend", "cascade"])
    assert ns.attention_backend == "cascade"
    from sglang.srt.arg_groups.choices import ATTENTION_BACKEND_CHOICES

    assert ATTENTION_BACKEND_CHOICES.count("cascade") == 1
