"""What `slimtune compare` runs: the methods, their options and rates, and one `slimtune train` command per run.

Every problem with the command line (an unknown method, a bad option for one of them) is found here, before any
run starts, so an hours-long comparison never dies on its fifth method because of a typo.
"""

import sys
from dataclasses import dataclass, field

from slimtune.errors import SlimtuneError
from slimtune.methods.registry import available_methods, create_method


@dataclass
class CompareSettings:
    task: str
    train: str
    methods: list[str]
    seeds: list[int]
    dev: str | None = None
    test: str | None = None
    options: dict[str, dict[str, str]] = field(default_factory=dict)  # method → {option: value}
    lrs: dict[str, float] = field(default_factory=dict)  # method → learning rate; absent: the method's default
    epochs: int = 1
    batch_size: int | None = None  # None: each method's own (train's default for the method and task)
    max_train_examples: int | None = None
    model: str | None = None
    max_length: int | None = None
    patience: int = 3
    threads: int | None = None  # torch threads per run; None: torch's own choice
    read_options: dict = field(default_factory=dict)  # reader flags passed to train and used for --test

    def run_name(self, method: str, seed: int) -> str:
        return f"{method}-s{seed}"

    def train_command(self, method: str, seed: int, out_dir: str) -> list[str]:
        """The `slimtune train` command line of one run, in a fresh interpreter."""
        return [sys.executable, "-m", "slimtune", "train", *self._train_flags(method, seed), "--out", out_dir,
                "--overwrite"]

    def recorded(self, method: str, seed: int) -> dict:
        """Everything that decides a run's result; a finished run is reused only while this is unchanged."""
        return {"train_flags": self._train_flags(method, seed), "test": self.test, "threads": self.threads}

    def _train_flags(self, method: str, seed: int) -> list[str]:
        flags = ["--task", self.task, "--method", method, "--train", self.train, "--seed", str(seed),
                 "--epochs", str(self.epochs), "--patience", str(self.patience),
                 "--few-shot", "off"]  # every method under the same (standard) recipe, scored on dev or --test
        optional = {"--dev": self.dev, "--lr": self.lrs.get(method), "--batch-size": self.batch_size,
                    "--max-train-examples": self.max_train_examples,
                    "--model": self.model, "--max-length": self.max_length,
                    **{"--" + k.replace("_", "-"): v for k, v in self.read_options.items()}}
        for flag, value in optional.items():
            if value is not None:
                flags += [flag, str(value)]
        for key, value in self.options.get(method, {}).items():
            flags += ["--set", f"{key}={value}"]
        return flags


def parse_methods(text: str, task) -> tuple[list[str], dict[str, str]]:
    """`lora,full` → ["lora", "full"]; `all` → every registered method `task` can take. Also returns the
    methods `all` left out, with why. Unknown names, and a named method the task refuses, are errors."""
    registered = list(available_methods())
    if text.strip() == "all":
        refusals = {name: task_refusal(task, name) for name in registered}
        return [n for n in registered if refusals[n] is None], {n: why for n, why in refusals.items() if why}
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise SlimtuneError("--methods names no method")
    unknown = [n for n in names if n not in registered]
    if unknown:
        raise SlimtuneError(f"unknown method {unknown[0]!r} in --methods; available: {', '.join(registered)}, or all")
    duplicated = sorted({n for n in names if names.count(n) > 1})
    if duplicated:
        raise SlimtuneError(f"--methods names {duplicated[0]!r} twice")
    refused = [why for n in names if (why := task_refusal(task, n))]
    if refused:
        raise SlimtuneError(refused[0])
    return names, {}


def task_refusal(task, method_name: str) -> str | None:
    """Why `task` cannot take the method (its own error line), or None."""
    try:
        task.check_method(create_method(method_name, {}))
    except SlimtuneError as refusal:
        return str(refusal)
    return None


def parse_method_options(pairs: list[str] | None, methods: list[str]) -> dict[str, dict[str, str]]:
    """`--set lora.r=16 --set adapter.size=32` → {"lora": {"r": "16"}, "adapter": {"size": "32"}}, checked."""
    options: dict[str, dict[str, str]] = {}
    for pair in pairs or []:
        target, sep, value = pair.partition("=")
        method, dot, key = target.strip().partition(".")
        if not sep or not dot or not key:
            raise SlimtuneError(f"--set expects METHOD.KEY=VALUE (e.g. lora.r=16), got {pair!r}")
        if method not in methods:
            raise SlimtuneError(f"--set {pair!r}: method {method!r} is not in --methods")
        options.setdefault(method, {})[key] = value.strip()
    for method in methods:
        create_method(method, options.get(method, {}))  # parses and validates, raising on a bad option
    return options


def parse_learning_rates(values: list[str] | None, methods: list[str]) -> dict[str, float]:
    """`--lr 1e-3` sets every method's rate; `--lr full=1e-4` one method's (it wins over a plain value)."""
    everyone, per_method = {}, {}
    for value in values or []:
        method, sep, number = value.rpartition("=")
        if sep and method not in methods:
            raise SlimtuneError(f"--lr {value!r}: method {method!r} is not in --methods")
        try:
            rate = float(number)
        except ValueError:
            raise SlimtuneError(f"--lr expects RATE or METHOD=RATE, got {value!r}") from None
        if not rate > 0:
            raise SlimtuneError(f"--lr {value!r}: the rate must be positive")
        if sep:
            per_method[method] = rate
        else:
            everyone = {m: rate for m in methods}
    return {**everyone, **per_method}
