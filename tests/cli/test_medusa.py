"""``sglang-pr medusa train`` argument handling (no training here)."""

import pytest

from sglang_pr.cli import CliError, build_parser
from sglang_pr.cli.medusa import train_config_from_args


def parse(*argv):
    return build_parser().parse_known_args(["medusa", "train", *argv])[0]


def test_defaults_and_overrides():
    args = parse("--epochs", "2", "--temperatures", "0,0.7")
    cfg = train_config_from_args(args)
    assert cfg.epochs == 2 and cfg.temperatures == (0.0, 0.7) and cfg.loss_decay == 0.8
    assert args.out.endswith("tiny-reasoner-medusa")


@pytest.mark.parametrize("argv,needle", [(("--epochs", "0"), "--epochs"),
                                         (("--temperatures", "a,b"), "--temperatures"),
                                         (("--tree-nodes", "1"), "--tree-nodes")])
def test_bad_values_name_the_flag(argv, needle):
    with pytest.raises(CliError, match=needle):
        train_config_from_args(parse(*argv))


def test_missing_model_is_a_cli_error(tmp_path):
    from sglang_pr.cli.medusa import run_train

    with pytest.raises(CliError, match="no config.json"):
        run_train(parse("--model-path", str(tmp_path)), [])
