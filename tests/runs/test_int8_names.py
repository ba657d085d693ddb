"""The two int8 ideas under their own names; the old `--quantize` flag and config keys keep working for a release."""

import pytest

from slimtune.cli import build_parser
from slimtune.runs.int8_keys import base_int8_of, inference_int8_of


def test_run_directories_written_before_the_rename_still_read():
    assert base_int8_of({"base_quantize": "int8"}) == "int8" and inference_int8_of({"base_quantize": "int8"}) is None
    assert inference_int8_of({"quantize": "int8"}) == "int8" and base_int8_of({"quantize": "int8"}) is None
    assert base_int8_of({"base_int8": "int8"}) == "int8" and inference_int8_of({"inference_int8": "int8"}) == "int8"


@pytest.mark.parametrize("argv,dest,use", [
    (["train", "--task", "classify", "--method", "lora", "--train", "t", "--out", "o"], "base_int8", "--base-int8"),
    (["serve"], "inference_int8", "--inference-int8"),
    (["predict", "--adapter", "a", "x"], "inference_int8", "--inference-int8"),
    (["eval", "--adapter", "a", "--data", "d"], "quantize", "--inference-int8 with --adapter, --base-int8 without"),
])
def test_the_old_quantize_flag_still_works_and_says_what_replaces_it(argv, dest, use, capsys):
    args = build_parser().parse_args([*argv, "--quantize", "int8"])
    assert getattr(args, dest) == "int8"
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--quantize is deprecated" in err and err.rstrip().endswith(use)


def test_the_new_flags_say_nothing(capsys):
    args = build_parser().parse_args(["train", "--task", "classify", "--method", "lora", "--train", "t", "--out", "o",
                                      "--base-int8", "int8"])
    assert args.base_int8 == "int8" and capsys.readouterr().err == ""


def test_an_adapter_refuses_base_int8(capsys):
    from slimtune.cli import main

    assert main(["eval", "--adapter", "nowhere", "--data", "d", "--base-int8", "int8"]) == 2
    assert "--base-int8: the adapter records these" in capsys.readouterr().err
