"""YAML run configs: flags from a file, command-line flags winning, unknown keys refused, runs saved as YAML."""

import json
import re

import pytest
import yaml
from safetensors.torch import load_file

from slimtune.cli import main
from tests.conftest import sentiment_rows, write_tsv


@pytest.fixture
def data(tmp_path):
    return {"train": write_tsv(tmp_path / "train.tsv", sentiment_rows(48, 0)),
            "dev": write_tsv(tmp_path / "dev.tsv", sentiment_rows(16, 1))}


def test_flags_to_saved_config_to_rerun_gives_the_same_adapter(data, tiny_model, tmp_path):
    first = tmp_path / "first"
    assert main(["train", "--method", "lora", "--train", data["train"], "--dev", data["dev"], "--model", tiny_model,
                 "--epochs", "1", "--batch-size", "8", "--set", "r=4", "--seed", "5", "--out", str(first)]) == 0
    saved = yaml.safe_load((first / "train_config.yaml").read_text())
    assert saved["set"] == ["r=4"] and saved["seed"] == 5 and "out" not in saved
    again = tmp_path / "again"
    assert main(["train", "--config", str(first / "train_config.yaml"), "--out", str(again)]) == 0
    a, b = load_file(first / "adapter.safetensors"), load_file(again / "adapter.safetensors")
    assert a.keys() == b.keys() and all((a[k] == b[k]).all() for k in a)


def test_command_line_flags_override_the_file(data, tiny_model, tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump({"method": "lora", "train": data["train"], "dev": data["dev"],
                                      "model": tiny_model, "epochs": 2, "batch-size": 8, "set": {"r": 2}}))
    out = tmp_path / "run"
    assert main(["train", "--config", str(config), "--epochs", "1", "--out", str(out)]) == 0
    assert json.loads((out / "metrics.json").read_text())["epochs_run"] == 1
    assert json.loads((out / "adapter_config.json").read_text())["options"]["r"] == 2


@pytest.mark.parametrize("content, message", [
    ("method: lora\nbatchsize: 8\n", "unknown key 'batchsize'; valid keys: "),
    ("- a\n- b\n", "expected a mapping"),
    ("epochs: many\n", "epochs = 'many' is not a valid value"),
    ("pooling: max\n", "choose from"),
    ("a: [\n", "not valid YAML"),
    ("resume: yes please\n", "resume must be true or false"),
])
def test_bad_config_files_are_one_line_errors(content, message, tmp_path, capsys):
    config = tmp_path / "bad.yaml"
    config.write_text(content)
    assert main(["train", "--config", str(config), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_not_utf8_and_missing_config_files(tmp_path, capsys):
    config = tmp_path / "bin.yaml"
    config.write_bytes(b"\xff\xfe\x00method")
    assert main(["train", "--config", str(config), "--out", str(tmp_path / "o")]) == 2
    assert main(["train", "--config", str(tmp_path / "none.yaml"), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.splitlines()
    assert "not UTF-8" in err[0] and "no such file" in err[1]


def test_help_shows_every_default(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    options = " ".join(capsys.readouterr().out.split()).split("options:", 1)[1]
    for flag, default in (("--epochs", "3"), ("--patience", "3"), ("--seed", "42"),
                          ("--batch-size", "32, or the method's measured one for the task: `slimtune methods`; "
                                          "the contrastive few-shot recipe: 16 pairs"),
                          ("--pairs-per-row", "20; measured against 10 and 40"), ("--pair-epochs", "1, as SetFit's")):
        assert re.search(rf"{flag} [A-Z_]+ .{{0,120}}?\(default: {re.escape(default)}\)", options), flag


@pytest.mark.parametrize("command", ["compare", "tune", "serve"])
def test_other_commands_read_run_configs_and_refuse_unknown_keys(command, tmp_path, capsys):
    config = tmp_path / "run.yaml"
    config.write_text("epochz: 2\n")
    assert main([command, "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert f"slimtune {command}: error:" in err and "unknown key 'epochz'" in err and "--out" not in err.split(";")[0]


def test_a_command_without_run_configs_says_so(tmp_path, capsys):
    config = tmp_path / "run.yaml"
    config.write_text("adapter: x\n")
    assert main(["eval", "--config", str(config)]) == 2
    assert "slimtune eval takes no --config" in capsys.readouterr().err
