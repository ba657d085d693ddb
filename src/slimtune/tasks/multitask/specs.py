"""The command-line description of a multi-task run, checked before anything is loaded."""

import re
from dataclasses import dataclass
from pathlib import Path

from slimtune.errors import SlimtuneError

TASK_NAME = re.compile(r"[A-Za-z0-9_-]{1,32}")  # no '.': a served task is addressed as ADAPTER.TASK


@dataclass(frozen=True)
class TaskSpec:
    name: str
    task: str  # task type: classify, ner
    train: str
    dev: str | None = None


def parse_task_spec(text: str) -> TaskSpec:
    """`sst2=classify:train.tsv` or `conll=ner:train.txt:valid.txt` → TaskSpec, files checked to exist."""
    from slimtune.tasks import TASK_TYPES, get_task

    name, sep, rest = text.partition("=")
    parts = rest.split(":")
    if not sep or len(parts) not in (2, 3) or not all(parts):
        raise SlimtuneError(f"--tasks expects NAME=TYPE:TRAIN[:DEV], got {text!r}")
    if not TASK_NAME.fullmatch(name):
        raise SlimtuneError(f"task name {name!r} must be 1-32 letters, digits, '_' or '-'")
    if not get_task(parts[0]).mixable:  # an unknown type is an error naming the known ones
        mixable = [task for task in TASK_TYPES if get_task(task).mixable]
        raise SlimtuneError(f"task {name}: {parts[0]} cannot be mixed; multi-task runs mix {', '.join(mixable)}")
    for path in parts[1:]:
        if not Path(path).is_file():
            raise SlimtuneError(f"task {name}: {path}: no such file")
    return TaskSpec(name, parts[0], parts[1], parts[2] if len(parts) == 3 else None)


def parse_task_specs(texts: list[str] | None) -> list[TaskSpec]:
    specs = [parse_task_spec(text) for text in texts or []]
    if len(specs) < 2:
        raise SlimtuneError("--task multi needs at least two --tasks NAME=TYPE:TRAIN[:DEV]")
    names = [spec.name for spec in specs]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise SlimtuneError(f"task names must differ; repeated: {', '.join(duplicates)}")
    return specs


def parse_weights(text: str | None, names: list[str]) -> dict[str, float]:
    """`sst2=1,conll=0.5` → a weight per task; tasks not named weigh 1."""
    weights = dict.fromkeys(names, 1.0)
    for pair in (text or "").split(","):
        if not pair.strip():
            continue
        name, sep, value = pair.partition("=")
        name = name.strip()
        if not sep or name not in weights:
            raise SlimtuneError(f"--weights expects NAME=WEIGHT for tasks {', '.join(names)}, got {pair!r}")
        try:
            weights[name] = float(value)
        except ValueError:
            raise SlimtuneError(f"--weights: {value!r} is not a number") from None
        if not weights[name] > 0:
            raise SlimtuneError(f"--weights: the weight of {name} must be positive")
    return weights
