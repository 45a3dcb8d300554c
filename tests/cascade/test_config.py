"""CascadeConfig: defaults declared once, unknown keys and bad values named."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from sglang_pr.cascade.config import ENV_VAR, CascadeConfig, load_config


def test_defaults_and_frozen():
    cfg = load_config({})
    assert cfg == CascadeConfig()
    with pytest.raises(ValidationError):
        cfg.min_group_size = 5


def test_env_json_is_parsed():
    cfg = load_config({ENV_VAR: '{"min_prefix_tokens": 128, "kernel": "torch", "extend": false}'})
    assert cfg.min_prefix_tokens == 128 and cfg.kernel == "torch" and cfg.extend is False
    assert CascadeConfig().extend is True  # the backend's own extend path is on by default


@pytest.mark.parametrize("raw,field", [
    ('{"min_prefix_tokenz": 1}', "min_prefix_tokenz"),
    ('{"min_group_size": 1}', "min_group_size"),
    ('{"min_prefix_tokens": 0}', "min_prefix_tokens"),
    ('{"kernel": "cuda"}', "kernel"),
    ('{"extend": "maybe"}', "extend"),
])
def test_bad_fields_are_named(raw, field):
    with pytest.raises(ValueError, match=field):
        load_config({ENV_VAR: raw})


@pytest.mark.parametrize("raw", ["{not json", "[1, 2]"])
def test_bad_json_is_explained(raw):
    with pytest.raises(ValueError, match=ENV_VAR):
        load_config({ENV_VAR: raw})
