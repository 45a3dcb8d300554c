"""Config validation names the field; defaults and eta direction."""

import math

import pytest

from pydantic import ValidationError

from sglang_pr.deepconf.config import (
    SAMPLING,
    SHIPPED_MODEL_TEMPERATURE,
    SHIPPED_MODEL_WINDOW,
    ConfigError,
    DeepConfConfig,
    parse_config,
    parse_trace_settings,
)


def test_defaults():
    c = DeepConfConfig()
    # issue 13's frontier choice: window 16, voter floor 4, warm-up budget/8 (16 at 256)
    assert (c.k, c.window, c.n_init, c.tau, c.budget) == (20, 16, None, 0.95, 256)
    assert (c.min_voters, c.warmup_fraction, c.warmup, c.voter_floor) == (4, 0.125, 16, 4)
    assert c.method == "deepconf_high" and c.effective_eta == 90
    # weighted vote for DeepConf (None: by method), the choice over both models' tuning splits
    assert c.use_consensus_stop and c.use_weighted_vote and c.weighted is None
    assert c.vote_confidence == "tail"  # weighs the vote; the threshold is the lowest group's
    assert not DeepConfConfig(weighted=False).use_weighted_vote
    assert DeepConfConfig(method="deepconf_low").effective_eta == 10
    sc = DeepConfConfig(method="sc")
    assert not sc.use_consensus_stop and not sc.use_weighted_vote and sc.effective_eta == 100


def test_sampling_defaults_are_the_papers_and_overridable():
    # The values the recorded benchmark figures were measured with (paper: T 0.6, top-p 0.95).
    assert SAMPLING.as_params() == {"temperature": 0.6, "top_p": 0.95, "max_new_tokens": 160}
    assert SHIPPED_MODEL_WINDOW == 16
    assert SHIPPED_MODEL_TEMPERATURE == 1.0  # the model-quality bar's, on purpose not SAMPLING's
    params = SAMPLING.as_params(temperature=1.0, n=4)
    assert params == {"temperature": 1.0, "top_p": 0.95, "max_new_tokens": 160, "n": 4}
    params["top_p"] = 0.5  # a fresh dict each time: the declaration cannot be edited through it
    assert SAMPLING.top_p == 0.95
    with pytest.raises(ValidationError):
        SAMPLING.temperature = 1.0


@pytest.mark.parametrize("bad,field", [
    ({"k": 0}, "deepconf.k"),
    ({"window": -1}, "deepconf.window"),
    ({"eta": 0, "method": "deepconf"}, "deepconf.eta"),
    ({"eta": 101, "method": "deepconf"}, "deepconf.eta"),
    ({"tau": 0}, "deepconf.tau"),
    ({"tau": 1.5}, "deepconf.tau"),
    ({"budget": 0}, "deepconf.budget"),
    ({"n_init": 8, "budget": 4}, "deepconf.n_init"),
    ({"bogus": 1}, "deepconf.bogus"),
    ({"method": "deepconf"}, "deepconf.eta"),
    ({"method": "deepconf_low", "eta": 50}, "deepconf.eta"),
    ({"extractor": "regex"}, "deepconf.answer_regex"),
    ({"method": "best"}, "deepconf.method"),
    # the voter floor: a budget below it names the budget, a warm-up below it the floor
    ({"min_voters": 4, "budget": 2, "n_init": 2}, "deepconf.budget"),
    ({"min_voters": 4, "budget": 3}, "deepconf.budget"),
    ({"min_voters": 6, "budget": 8, "n_init": 4}, "deepconf.min_voters"),
    ({"min_voters": 0}, "deepconf.min_voters"),
])
def test_bad_values_name_the_field(bad, field):
    with pytest.raises(ConfigError) as ei:
        parse_config(bad)
    assert ei.value.field == field
    assert str(ei.value).startswith(field + ":")


def test_frozen_and_not_a_dict():
    c = DeepConfConfig()
    with pytest.raises(Exception):
        c.k = 3
    with pytest.raises(ConfigError, match="deepconf: must be an object"):
        parse_config([1])


def test_trace_settings():
    t = parse_trace_settings({"window": 8, "threshold": "-inf"})
    assert t.window == 8 and t.k == 20 and not t.stops
    assert t.to_custom_params() == {"k": 20, "window": 8, "threshold": None}
    assert parse_trace_settings({"threshold": 1.5}).stops
    assert parse_trace_settings(True) == parse_trace_settings({})
    with pytest.raises(ConfigError) as ei:
        parse_trace_settings({"window": 0})
    assert ei.value.field == "custom_params.deepconf.window"
    with pytest.raises(ConfigError, match="threshold"):
        parse_trace_settings({"threshold": math.nan})
    with pytest.raises(ConfigError, match="custom_params.deepconf.x: unknown field"):
        parse_trace_settings({"x": 1})


def test_voter_floor_is_cut_to_the_warmup_and_off_for_sc():
    assert DeepConfConfig(min_voters=4).voter_floor == 4
    assert DeepConfConfig(method="sc", min_voters=4, budget=2).voter_floor == 0  # no warm-up
    assert DeepConfConfig(min_voters=None).voter_floor == 0


@pytest.mark.parametrize("budget,fraction,floor,want", [
    (256, 0.25, None, 16),  # capped at the paper's 16
    (64, 0.25, None, 16), (32, 0.25, None, 8), (16, 0.25, None, 4), (8, 0.25, None, 2),
    (64, 0.125, 4, 8), (32, 0.125, 4, 4), (8, 0.125, 4, 4),  # the floor lifts a tiny warm-up
    (3, 0.125, None, 1), (2, 0.5, None, 1),
])
def test_warmup_follows_the_budget_when_n_init_is_unset(budget, fraction, floor, want):
    cfg = DeepConfConfig(budget=budget, warmup_fraction=fraction, min_voters=floor)
    assert cfg.warmup == want and cfg.warmup <= budget
    assert DeepConfConfig(budget=budget, n_init=1, warmup_fraction=fraction).warmup == 1


def test_an_unset_floor_is_cut_to_a_small_budget_but_an_explicit_one_is_not():
    # the default floor never refuses a small group; the same floor given explicitly does
    default_floor = DeepConfConfig.model_fields["min_voters"].default
    if default_floor is not None:
        assert DeepConfConfig(budget=2).voter_floor == min(default_floor, 2)
    with pytest.raises(ConfigError, match="deepconf.budget: must be >= min_voters"):
        parse_config({"budget": 2, "min_voters": 3})
