"""The DeepConf test server: the shipped model with seeded sampling switched on.

``SGLANG_PR_SEEDED_SAMPLING=1`` makes ``sampling_seed`` reproducible on a CPU (see
sglang_pr/cpu_platform/seeded_sampling.py), which the "threshold -inf == plain sampling" test
needs. Group branches still differ: the group gives each branch its own seed (branch i of a group
with ``sampling_params.sampling_seed`` s samples with s + i), so a seeded group — the route
tests' 200 groups, for one — is reproducible. The same server serves the fuzzers
(test_fuzz.py): their bodies are cheap, and they leave it healthy and idle.
``SGLANG_PR_TEST_MODEL`` (development only) serves another model directory instead.
"""

from __future__ import annotations

import os

import pytest

SERVER_ENV = {"SGLANG_PR_SEEDED_SAMPLING": "1"}


def deepconf_server_handle(factory):
    return factory("deepconf", env=SERVER_ENV,
                   model_path=os.environ.get("SGLANG_PR_TEST_MODEL") or None)


@pytest.fixture(scope="session")
def deepconf_url(sglang_server_factory) -> str:
    return deepconf_server_handle(sglang_server_factory).base_url
