"""Frontend tests share the DeepConf test server (same name and settings -> same process)."""

from __future__ import annotations

import os

import pytest


@pytest.fixture(scope="session")
def deepconf_url(sglang_server_factory) -> str:
    return sglang_server_factory("deepconf", env={"SGLANG_PR_SEEDED_SAMPLING": "1"},
                                 model_path=os.environ.get("SGLANG_PR_TEST_MODEL") or None
                                 ).base_url
