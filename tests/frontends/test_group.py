"""Frontend language: a program runs an online DeepConf group with early termination."""

import pytest
import sglang as sgl

from sglang_pr.frontends import deepconf_group
from sglang_pr.frontends.group import GroupError
from sglang_pr.model.task import heldout_set

pytestmark = pytest.mark.server


@sgl.function
def online(s, prompt, **deepconf):
    s += prompt
    s += deepconf_group(s, "answer", sampling_params={"max_new_tokens": 64,
                                                      "temperature": 0.8}, **deepconf)


def test_online_group_from_a_program(deepconf_url):
    p = heldout_set(1)[0]
    s = online.run(prompt=p.prompt, method="deepconf_low", budget=8, n_init=4, window=4,
                   backend=sgl.RuntimeEndpoint(deepconf_url))
    assert s.error() is None
    res = s["answer_group"]
    assert s["answer"] == (res["answer"] or "")
    assert 4 <= res["totals"]["traces_started"] <= 8
    assert res["threshold"] is not None


def test_bad_settings_raise_naming_the_field(deepconf_url):
    with pytest.raises(GroupError, match="deepconf.tau"):
        online.run(prompt=heldout_set(1)[0].prompt, tau=3, backend=sgl.RuntimeEndpoint(deepconf_url))
