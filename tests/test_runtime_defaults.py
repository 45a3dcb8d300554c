"""Flag helpers of ``sglang_pr.runtime_defaults``: switches, ``--flag=value``, user flags win."""

from sglang_pr.runtime_defaults import add_unset_flags, flags_argv


def test_flags_argv_writes_switches_without_a_value():
    assert flags_argv({"--a": "1", "--b": None, "--c": "x"}) == ["--a", "1", "--b", "--c", "x"]


def test_add_unset_flags_keeps_the_users_and_adds_the_rest():
    user = ["--a=7", "--port", "1"]
    assert add_unset_flags(user, {"--a": "1", "--b": None}) == ["--a=7", "--port", "1", "--b"]
    assert user == ["--a=7", "--port", "1"]  # not modified in place

