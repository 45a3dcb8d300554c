"""benchmarks/deepconf/choose_defaults.py: the cross-model choice rule against a direct
computation on synthetic levers tables, refusals of tables that do not match, and the
recorded choice equals DeepConfConfig's defaults."""

import json
import math
from pathlib import Path

import numpy as np
import pytest

from sglang_pr.deepconf.config import DeepConfConfig

RESULT = Path(__file__).resolve().parents[2] / "benchmarks/results/deepconf_defaults.json"


@pytest.fixture(scope="module")
def chooser(benchmark_module):
    return benchmark_module("deepconf/choose_defaults.py", "choose_defaults")


def lever(name, goal, frac, tokens, fields=None):
    """One levers-table row: ``goal`` budgets met of len(tokens), ``tokens`` per budget."""
    return {"name": name, "fields": fields or {"method": "deepconf_high", "tag": name},
            "budgets_goal_met": goal, "saturation_fraction": frac,
            "per_budget": [{"budget": 8 * 2 ** i, "tokens_per_question": t}
                           for i, t in enumerate(tokens)]}


def direct_choice(tables):
    """The rule spelled out: (model, budget) points met, worst fraction, relative tokens."""
    names = [lv["name"] for lv in next(iter(tables.values()))]
    cheapest = {m: min(sum(p["tokens_per_question"] for p in lv["per_budget"]) for lv in t)
                for m, t in tables.items()}

    def score(name):
        rows = {m: next(lv for lv in t if lv["name"] == name) for m, t in tables.items()}
        fracs = [r["saturation_fraction"] for r in rows.values()]
        worst = math.inf if None in fracs else max(fracs)
        rel = np.mean([sum(p["tokens_per_question"] for p in r["per_budget"]) / cheapest[m]
                       for m, r in rows.items()])
        return (-sum(r["budgets_goal_met"] for r in rows.values()), worst, rel)

    return min(names, key=score)


def test_the_choice_follows_the_rule_on_random_tables(chooser):
    rng = np.random.default_rng(3)
    for trial in range(200):
        names = [f"l{i}" for i in range(int(rng.integers(2, 7)))]
        tables = {}
        for m, budgets in (("a", 5), ("b", 3)):
            tables[m] = [lever(n, int(rng.integers(0, budgets + 1)),
                               None if rng.random() < 0.2 else float(rng.choice([0.4, 0.6, 0.9])),
                               rng.integers(100, 200, size=budgets).tolist()) for n in names]
        got = chooser.choose_across(tables)
        assert got["chosen"] == direct_choice(tables), trial
        assert got["levers"][0]["name"] == got["chosen"]
        assert {r["name"] for r in got["levers"]} == set(names)


def test_one_model_cannot_outvote_the_other_on_the_fraction(chooser):
    # "w" and "p" meet the goal at the same points; p is cheaper on model a but needs 0.95
    # of SC's tokens on model b: the worst model decides (what moved the default to weighted)
    tables = {"a": [lever("p", 5, 0.54, [100] * 5), lever("w", 5, 0.55, [100] * 5)],
              "b": [lever("p", 3, 0.95, [100] * 3), lever("w", 3, 0.58, [100] * 3)]}
    assert chooser.choose_across(tables)["chosen"] == "w"
    tables["b"][1]["budgets_goal_met"] = 2  # one point fewer: the goal ranks first
    assert chooser.choose_across(tables)["chosen"] == "p"


def test_tables_that_do_not_match_are_refused(chooser):
    a = [lever("x", 1, 0.5, [1]), lever("y", 1, 0.5, [1])]
    with pytest.raises(ValueError, match="same levers"):
        chooser.choose_across({"a": a, "b": a[:1]})
    other = [lever("x", 1, 0.5, [1], {"method": "deepconf_low"}), a[1]]
    with pytest.raises(ValueError, match="'x' has other fields"):
        chooser.choose_across({"a": a, "b": other})


def test_a_default_that_is_not_the_choice_is_reported(chooser):
    assert chooser.config_mismatches({"method": "deepconf_high", "weighted": True}) == {}
    assert chooser.config_mismatches({"method": "deepconf_low"}) == {
        "method": ["deepconf_high", "deepconf_low"]}
    assert chooser.config_mismatches({"weighted": False}) == {"weighted": [None, False]}


def test_the_recorded_choice_is_the_configs_default(chooser):
    result = json.loads(RESULT.read_text())
    assert result["config_matches"] and result["chosen_lever"] == result["levers"][0]["name"]
    assert chooser.config_mismatches(result["chosen_fields"]) == {}
    assert DeepConfConfig().use_weighted_vote == result["chosen_fields"]["weighted"]
    assert len(result["from"]) >= 2  # every model's tuning split, not one model's
