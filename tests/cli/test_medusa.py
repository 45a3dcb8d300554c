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

    with pytest.raises(CliError, match="--model-path .*config.json"):
        run_train(parse("--model-path", str(tmp_path)), [])


def test_unknown_model_name_lists_the_known_ones():
    from sglang_pr.cli.medusa import run_train

    with pytest.raises(CliError, match="known: .*smollm2-135m"):
        run_train(parse("--model-path", "no-such-model"), [])


def test_prompts_file_not_jsonl_names_file_and_line_exit_2(tmp_path, capsys):
    from sglang_pr.cli import main
    from sglang_pr.model import SHIPPED_MODEL_DIR

    f = tmp_path / "chat.txt"
    f.write_text('{"prompt": "hi"}\nplain text line\n')
    rc = main(["medusa", "train", "--model-path", str(SHIPPED_MODEL_DIR), "--prompts", str(f),
               "--out", str(tmp_path / "h")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and f"{f}:2: not a JSON object" in err[0]
    assert not (tmp_path / "h").exists()


def test_overlapping_heldout_prompts_are_refused(tmp_path):
    from sglang_pr.cli.medusa import run_train
    from sglang_pr.model import SHIPPED_MODEL_DIR

    f = tmp_path / "p.jsonl"
    f.write_text("".join(f'{{"prompt": "q{i}"}}\n' for i in range(10)))
    with pytest.raises(CliError, match="held-out prompts are also training prompts"):
        run_train(parse("--model-path", str(SHIPPED_MODEL_DIR), "--prompts", str(f),
                        "--heldout-prompts", str(f)), [])


def test_recorded_command_drops_flags_that_do_not_change_the_heads():
    from sglang_pr.cli.medusa import _result_args

    argv = ["train", "--model-path", "smollm2-135m", "--data-cache", "/tmp/g.json", "--quiet",
            "--port=123", "--seed", "0"]
    assert _result_args(argv) == ["train", "--model-path", "smollm2-135m", "--seed", "0"]
