"""YAML run configs: `slimtune train --config run.yaml`, every flag a key, flags on the command line winning.

    # run.yaml
    task: ner
    method: lora
    train: data/conll2003/train.txt.gz
    epochs: 1
    set: {r: 16, targets: "query,value"}   # or a list: ["r=16", "targets=query,value"]

Keys are the flags' long names, with `-` or `_` (`batch-size`, `batch_size`). An unknown key is an error naming
the valid ones. Every run directory saves its resolved flags as `train_config.yaml`, so
`slimtune train --config RUN/train_config.yaml --out RUN2` trains that run again.
"""

import argparse
from pathlib import Path

from slimtune.errors import SlimtuneError

NOT_SAVED = {"handler", "argv", "command", "config", "out", "resume", "overwrite"}
MAX_CONFIG_BYTES = 1 << 20


def add_config_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", metavar="YAML",
                        help="read flags from a YAML file (keys are flag names); flags given here override it")


def config_path(argv: list[str]) -> str | None:
    """The value of `--config` in `argv`, if any (`--config F` or `--config=F`)."""
    for i, token in enumerate(argv):
        if token == "--config":
            if i + 1 >= len(argv):
                raise SlimtuneError("--config expects a YAML file")
            return argv[i + 1]
        if token.startswith("--config="):
            return token.split("=", 1)[1]
    return None


def read_yaml(path: str) -> dict:
    import yaml

    file = Path(path)
    if not file.is_file():
        raise SlimtuneError(f"--config {path}: no such file")
    if file.stat().st_size > MAX_CONFIG_BYTES:
        raise SlimtuneError(f"--config {path}: larger than {MAX_CONFIG_BYTES // 1024} KiB")
    try:
        data = yaml.safe_load(file.read_bytes().decode("utf-8"))
    except UnicodeDecodeError:
        raise SlimtuneError(f"--config {path}: not UTF-8 text") from None
    except (yaml.YAMLError, RecursionError) as e:
        raise SlimtuneError(f"--config {path}: not valid YAML ({str(e).splitlines()[0]})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise SlimtuneError(f"--config {path}: expected a mapping of flag names to values, got {type(data).__name__}")
    return data


def _as_list(action: argparse.Action, value) -> list[str]:
    """An append flag (`--set`, `--adapter`) from a YAML list, or a mapping written as key=value pairs."""
    if isinstance(value, dict):
        return [f"{k}={_scalar(v)}" for k, v in value.items()]
    if isinstance(value, list):
        return [_scalar(v) for v in value]
    return [_scalar(value)]


def _scalar(value) -> str:
    if isinstance(value, (list, tuple)):
        return ",".join(map(str, value))
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


def _convert(action: argparse.Action, key: str, value, path: str):
    if isinstance(action, argparse._AppendAction):
        return _as_list(action, value)
    if isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction)):
        if not isinstance(value, bool):
            raise SlimtuneError(f"--config {path}: {key} must be true or false, got {value!r}")
        return value
    if isinstance(value, (dict, list)) and action.nargs not in ("+", "*"):
        raise SlimtuneError(f"--config {path}: {key} takes one value, got {type(value).__name__}")
    values = value if isinstance(value, list) else [value]
    converted = []
    for item in values:
        text = _scalar(item) if not isinstance(item, str) else item
        try:
            item = action.type(text) if action.type else text
        except (TypeError, ValueError, argparse.ArgumentTypeError):
            raise SlimtuneError(f"--config {path}: {key} = {value!r} is not a valid value") from None
        if action.choices is not None and item not in action.choices:
            raise SlimtuneError(f"--config {path}: {key} = {item!r}; choose from {list(action.choices)}")
        converted.append(item)
    return converted if isinstance(value, list) else converted[0]


def apply_config(parser: argparse.ArgumentParser, path: str) -> None:
    """Make the YAML file's values `parser`'s defaults (flags given on the command line still win)."""
    actions = {a.dest: a for a in parser._actions if a.option_strings and a.dest not in ("help", "config")}
    defaults = {}
    for key, value in read_yaml(path).items():
        dest = str(key).replace("-", "_")
        if dest not in actions:
            valid = ", ".join(sorted(d.replace("_", "-") for d in actions))
            raise SlimtuneError(f"--config {path}: unknown key {key!r}; valid keys: {valid}")
        defaults[dest] = _convert(actions[dest], str(key), value, path)
        actions[dest].required = False
    parser.set_defaults(**defaults)


def resolved_flags(args: argparse.Namespace) -> dict:
    """The flags a run was given, as `train_config.yaml` saves them (not where it went or how it was resumed)."""
    return {k.replace("_", "-"): v for k, v in vars(args).items() if k not in NOT_SAVED and v is not None}

