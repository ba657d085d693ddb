"""`train --init-adapter DIR`: more training from an adapter's weights (a slimtune run or a peft directory).

The adapter fixes what must not change under its weights: method and options, task, label set (the head's rows)
and base model (checked by fingerprint); pooling and length limit default to its own. The new training data may
use a subset of its labels. Optimiser state and schedule start afresh (for an interrupted run, use --resume).
"""

from dataclasses import dataclass
from pathlib import Path

import torch

from slimtune.errors import SlimtuneError


@dataclass
class InitialAdapter:
    path: str
    config: dict
    state: dict[str, torch.Tensor]

    @property
    def labels(self) -> list[str]:
        return self.config["labels"]

    def check_labels(self, data_labels: list[str]) -> list[str]:
        """The adapter's labels, in its order, if they cover every label the data uses."""
        unknown = sorted(set(data_labels) - set(self.labels))
        if unknown:
            raise SlimtuneError(f"--init-adapter {self.path} has no label {unknown[0]!r} (its labels: "
                                f"{', '.join(self.labels)})")
        return self.labels

    def load_into(self, model, method, base_fingerprint: str) -> None:
        from slimtune.methods.adaptation import load_adapter_state

        if base_fingerprint != self.config["base_fingerprint"]:
            raise SlimtuneError(f"--init-adapter {self.path} was trained on another base model; pass the one it "
                                f"records ({self.config.get('base_model') or 'the default model'})")
        load_adapter_state(model, method, self.state)


def read_initial_adapter(request) -> InitialAdapter:
    """The adapter in `request.init_adapter`; fills the request's method, options, base, pooling and length limit
    from it, refusing a different --method, a different --task or any --set."""
    from slimtune.runs.adapter_files import ADAPTER_FILE, read_config
    from slimtune.runs.formats.peft_import import resolve_adapter_dir
    from slimtune.runs.int8_keys import base_int8_of
    from slimtune.runs.run_directory import read_tensors

    given = request.init_adapter
    run_dir = resolve_adapter_dir(given, request.model)
    config = read_config(run_dir)
    if config["task"] == "multi":
        raise SlimtuneError(f"--init-adapter {given} is a multi-task adapter; start single-task training from a "
                            "single-task one")
    if config["task"] != request.task or config["method"] != request.method:
        raise SlimtuneError(f"--init-adapter {given} is a {config['task']} {config['method']} adapter; pass "
                            f"--task {config['task']} --method {config['method']}")
    if request.options:
        raise SlimtuneError(f"--set: --init-adapter {given} fixes the method options ({config['options']})")
    if base_int8_of(config) != request.base_int8:
        raise SlimtuneError(f"--init-adapter {given} was trained with --base-int8 {base_int8_of(config)}; "
                            "train with the same")
    request.options = {k: ",".join(map(str, v)) if isinstance(v, (list, tuple)) else str(v)
                       for k, v in config["options"].items()}
    request.model = request.model or config.get("base_model")
    request.pooling = request.pooling or config.get("pooling")
    request.max_length = request.max_length or config.get("max_length")
    return InitialAdapter(str(given), config, read_tensors(Path(run_dir) / ADAPTER_FILE, "--init-adapter's weights"))
